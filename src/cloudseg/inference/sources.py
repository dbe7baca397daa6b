"""What `cloudseg predict --input` names: image pairs (a dataset root, a folder with rgb/ and ngr/, one rgb/<name>
file) or GeoTIFF scenes (a file, a folder of them, a glob), or a text file listing any of these, one a line, so
that an archive can be split between jobs."""

import glob
from pathlib import Path

from cloudseg.data.dataset import find_samples
from cloudseg.data.io import IMAGE_SUFFIXES, SampleFiles
from cloudseg.errors import DataError
from cloudseg.inference.geotiff import GEOTIFF_SUFFIXES, SceneFile

Inputs = list[SampleFiles] | list[SceneFile]


def is_scene(path: Path) -> bool:
    """A GeoTIFF file that is not one image of a pair (those lie in rgb/)."""
    return path.suffix.lower() in GEOTIFF_SUFFIXES and path.parent.name != "rgb"


def find_inputs(source: str | Path) -> Inputs:
    """The image pairs, or the GeoTIFF scenes, that `source` names; never both, and never two of one name (their
    masks would overwrite each other)."""
    inputs = _found(source)
    where = {}
    for item in inputs:
        if item.name in where:
            raise DataError(
                f"{source}: two images named {item.name}, {where[item.name]} and {item.paths[0]}; their masks "
                "would overwrite each other: rename one, or predict them into separate folders"
            )
        where[item.name] = item.paths[0]
    return inputs


def _found(source: str | Path) -> Inputs:
    if glob.has_magic(str(source)) and not Path(source).exists():
        paths = [Path(p) for p in sorted(glob.glob(str(source), recursive=True))]
        scenes = [SceneFile(p.stem, p) for p in paths if is_scene(p) and p.is_file()]
        if not scenes:
            raise DataError(f"{source}: matches no GeoTIFF scene ({', '.join(GEOTIFF_SUFFIXES)})")
        return scenes
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    if source.suffix.lower() == ".txt":
        return listed_inputs(source)
    if source.is_dir() and source.name in ("rgb", "ngr"):
        raise DataError(
            f"{source}: this is the {source.name}/ folder of a pair; pass the folder above it, {source.parent}"
        )
    if source.is_file() and is_scene(source):
        return [SceneFile(source.stem, source)]
    if source.is_file():
        candidates = [source.parent.parent / "ngr" / f"{source.stem}{s}" for s in IMAGE_SUFFIXES]
        ngr = next((c for c in candidates if c.is_file()), None)
        if source.parent.name != "rgb":
            raise DataError(f"{source}: a single image must lie in an rgb/ folder with its pair in ../ngr/")
        if ngr is None:
            raise DataError(f"{source}: no NIR image of the same name in {source.parent.parent / 'ngr'}")
        return [SampleFiles(source.stem, source, ngr)]
    split = source / "test" if (source / "test" / "rgb").is_dir() else source
    if (split / "rgb").is_dir():
        return find_samples(split, None)
    scenes = [SceneFile(p.stem, p) for p in sorted(source.iterdir()) if is_scene(p) and p.is_file()]
    if not scenes:
        raise DataError(
            f"{source}: no rgb/ and ngr/ folders (nor test/rgb/) and no GeoTIFF scenes; expected images to predict"
        )
    return scenes


def listed_inputs(listing: Path) -> Inputs:
    """The inputs of every source a text file lists, one a line (relative to the file's folder; blank lines and
    lines starting with # are skipped); two inputs of one name are an error, as their masks would collide."""
    try:
        lines = listing.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise DataError(f"{listing}: not a text file of paths, one a line ({error})") from error
    inputs, where = [], {}
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower().endswith(".txt"):
            raise DataError(f"{listing}, line {number}: a list of sources cannot list another list ({line})")
        try:
            found = find_inputs(listing.parent / line)
        except DataError as error:
            raise DataError(f"{listing}, line {number}: {error}") from error
        if inputs and type(found[0]) is not type(inputs[0]):
            raise DataError(f"{listing}, line {number}: lists GeoTIFF scenes and image pairs; list one kind a file")
        for item in found:
            if item.name in where:
                raise DataError(f"{listing}, line {number}: a second image named {item.name} (the first is from "
                                f"line {where[item.name]}); their masks would overwrite each other")  # fmt: skip
            where[item.name] = number
        inputs += found
    if not inputs:
        raise DataError(f"{listing}: lists no images")
    return inputs
