"""Checked dataclasses: typed fields with ranges (`Annotated[..., Bounds(...)]`) and choices (`Literal`), built
from plain mappings, as YAML gives them, and turned back into them. The config sections in `config.py` are made of
these."""

import contextlib
import dataclasses
import difflib
import functools
import json
import math
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml

from cloudseg.errors import ConfigError
from cloudseg.schema import MIN_SIDE


@dataclass(frozen=True)
class Bounds:
    """The range a number must lie in, as an annotation: `Annotated[int, Bounds(1)]` is an int of at least 1."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low < value, rather than low <= value
    high_open: bool = False

    def admits(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        low = None if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        high = None if self.high is None else f"{'<' if self.high_open else '<='} {self.high:g}"
        return " and ".join(part for part in (low, high) if part)


AtLeastOne = Annotated[int, Bounds(1)]
NonNegativeInt = Annotated[int, Bounds(0)]
NonNegative = Annotated[float, Bounds(0)]
Positive = Annotated[float, Bounds(0, low_open=True)]
Probability = Annotated[float, Bounds(0, 1)]
BelowOne = Annotated[float, Bounds(0, 1, high_open=True)]  # 0 <= value < 1
UnitOpen = Annotated[float, Bounds(0, 1, low_open=True, high_open=True)]  # strictly between 0 and 1
PositivePair = tuple[Positive, Positive]  # a (low, high) range; sections check low <= high
Side = Annotated[int, Bounds(MIN_SIDE)]  # an image side the models take


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _matches(value: Any, kind: Any) -> bool:
    """Whether `value` (already coerced) is of type `kind`, annotations aside."""
    if typing.get_origin(kind) is Annotated:
        return _matches(value, typing.get_args(kind)[0])
    if typing.get_origin(kind) is Literal:
        return value in typing.get_args(kind)
    if typing.get_origin(kind) is tuple:
        return isinstance(value, tuple)
    return kind is Any or (isinstance(kind, type) and isinstance(value, kind))


def check_value(value: Any, kind: Any, where: str) -> None:
    """Raises a ConfigError naming `where` if `value` breaks a bound of `kind` or is not a finite number."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        option = next((a for a in args if a is not type(None) and _matches(value, a)), None)
        if option is not None:
            check_value(value, option, where)
    elif origin is Annotated:
        check_value(value, args[0], where)
        for bound in kind.__metadata__:
            if isinstance(bound, Bounds) and not bound.admits(value):
                raise ConfigError(f"{where}: {value!r} is out of range; expected a value {bound}")
    elif origin is tuple:
        element_kinds = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        for i, (element, element_kind) in enumerate(zip(value, element_kinds, strict=True)):
            check_value(element, element_kind, f"{where}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: {value} is not a finite number")


class Section:
    """A config section: checks every field's type or choice and its bounds, then the relations between fields
    (`check`), each time one is built, from YAML or in Python. `section` is its key path in the whole config."""

    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        kinds = _field_types(type(self))
        for item in dataclasses.fields(self):
            value, kind, where = getattr(self, item.name), kinds[item.name], self.key(item.name)
            if isinstance(value, os.PathLike):  # a Path given in Python is kept as the text a config holds
                value = os.fspath(value)
                object.__setattr__(self, item.name, value)
            if dataclasses.is_dataclass(kind):
                if not isinstance(value, kind):
                    raise ConfigError(f"{where}: expected a {kind.__name__}, got {value!r}")
                continue
            coerced = _coerce(value, kind, where)  # a wrong type or choice is an error here
            check_value(coerced, kind, where)
            if coerced != value:  # a number for a choice of text, say
                raise ConfigError(f"{where}: {value!r}; expected {coerced!r}")
        self.check()

    @classmethod
    def key(cls, name: str) -> str:
        return f"{cls.section}.{name}" if cls.section else name

    def check(self) -> None:
        """Relations between fields; a subclass raises a ConfigError that names the keys."""

    def ordered(self, *names: str) -> None:
        """Each of these (low, high) fields must have low <= high."""
        for name in names:
            low, high = getattr(self, name)
            if low > high:
                raise ConfigError(f"{self.key(name)}: [{low:g}, {high:g}]; expected low <= high")


@dataclass(frozen=True)
class Typed:
    """A value given on the command line: as YAML reads it, and the text as typed, which a text setting takes
    (a run named 001 stays 001, not the number 1)."""

    text: str
    value: Any


def _coerce(value: Any, kind: Any, where: str) -> Any:
    """`value` as type `kind`, or a ConfigError that names the key and what was expected."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Annotated:  # bounds are checked apart, by check_value
        return _coerce(value, args[0], where)
    if isinstance(value, Typed) and origin not in (typing.Union, types.UnionType):
        value = value.text if kind is str else value.value
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {kind.__name__} fields, got {value!r}")
        return from_dict(kind, value)
    if origin in (typing.Union, types.UnionType):
        if (value.value if isinstance(value, Typed) else value) is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin is Literal:
        if value not in args and isinstance(value, int | float) and str(value) in args:
            return str(value)  # YAML reads 32 as a number; the choice is the text "32"
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if kind is float and isinstance(value, int | float | str) and not isinstance(value, bool):
        with contextlib.suppress(ValueError):  # text that is no number falls through to the error below
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as text
    if kind is Any or (isinstance(kind, type) and isinstance(value, kind) and not (kind is int and value is True)):
        return value
    raise ConfigError(f"{where}: expected {getattr(kind, '__name__', kind)}, got {value!r}")


def from_dict(cls: type, data: dict) -> Any:
    """Builds dataclass `cls` from a mapping; unknown keys, wrongly typed values and values out of range are
    errors that name the key. Keys a class has renamed (its `renamed_keys`) are read under their new names, and
    keys it no longer has (`retired_keys`) are left out, so that saved configs keep loading."""
    renamed, retired = getattr(cls, "renamed_keys", {}), getattr(cls, "retired_keys", ())
    data = {renamed.get(key, key): value for key, value in data.items() if key not in retired}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        close = difflib.get_close_matches(unknown[0], fields, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"{cls.key(unknown[0])}: unknown key; {hint}valid keys are {', '.join(fields)}")
    kinds = _field_types(cls)
    return cls(**{name: _coerce(value, kinds[name], cls.key(name)) for name, value in data.items()})


def setting_keys(cls: type) -> list[str]:
    """Every key of a config class as a dotted path: model.name, data.augment.crop_size, ..."""
    hints = typing.get_type_hints(cls)
    keys = []
    for item in dataclasses.fields(cls):
        kind = hints[item.name]
        keys += [f"{item.name}.{k}" for k in setting_keys(kind)] if dataclasses.is_dataclass(kind) else [item.name]
    return keys


def to_dict(config: Any) -> dict:
    """A plain mapping (tuples as lists) that `from_dict` turns back into the same config."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Applies `key.sub=value` overrides (values parsed as YAML) to a nested mapping, returning a new one."""
    result = yaml.safe_load(yaml.safe_dump(data)) or {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key.path=value")
        node = result
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        try:
            node[leaf] = Typed(text, yaml.safe_load(text))
        except yaml.YAMLError as error:
            raise ConfigError(f"--{key} {text}: not a value YAML can read ({str(error).splitlines()[0]})") from error
    return result


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as error:  # its text spans lines and names "<unicode string>", not the file
        mark = error.problem_mark or error.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({error.problem or error.context})") from error
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read the config ({error})") from error
    if not isinstance(data, dict | None):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data or {}
