"""Every number in the tables of docs/PERFORMANCE.md and docs/RESULTS.md comes from a committed record.

Each table is governed by a line between it and the table or heading before it that starts with `Record:` (the
backticked paths of one or more JSON records under benchmarks/results/) or with `Uncommitted` (a run whose raw
output was not kept, with its date). Each number of a recorded table, outside its first column (the row's
label), must be a value of its records rounded to the digits it is printed with: as it is, times 100 if printed
as a percentage, or in the unit its column's header names (GFLOP for FLOP, ms for seconds). The check does not
tie a cell to one key of the record: a wrong number that happens to equal another figure of the same records
passes.
"""

import json
import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "docs" / "PERFORMANCE.md", ROOT / "docs" / "RESULTS.md"]
RESULTS = ROOT / "benchmarks" / "results"
PROVENANCE = {"command", "commit", "versions", "device", "date"}
NUMBER = re.compile(r"(?<![\w.])[-\N{MINUS SIGN}]?\d[\d,]*(?:\.\d+)?%?")
DATE = re.compile(r"(?<!\d)20\d\d-\d\d-\d\d(?!\d)")


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def tables(text: str) -> list[tuple[int, str, list[str], list[list[str]]]]:
    """(line number, governing marker line or '', header cells, data rows split into cells) of each markdown
    table (a run of lines starting with `|`, after optional indentation)."""
    found, marker, rows, start = [], "", [], 0
    for number, line in enumerate([*text.splitlines(), ""], start=1):
        if line.lstrip().startswith("|"):
            if not rows:
                start = number
            rows.append(cells(line))
            continue
        if rows:
            found.append((start, marker, rows[0], rows[2:]))  # the header, its rule, the rows
            rows, marker = [], ""  # a marker governs the next table only
        if line.startswith("#"):
            marker = ""
        elif line.startswith(("Record:", "Records:", "Uncommitted")):
            marker = line
    return found


def numbers(cell: str) -> list[tuple[float, int, bool]]:
    """(value, decimals printed, printed as a percentage) of each number in a cell, code spans left out."""
    cell = re.sub(r"`[^`]*`", "", cell)
    found = []
    for token in NUMBER.findall(cell):
        percent = token.endswith("%")
        digits = token.rstrip("%").replace(",", "").replace("\N{MINUS SIGN}", "-")
        decimals = len(digits.partition(".")[2])
        found.append((float(digits), decimals, percent))
    return found


def leaves(value) -> list[float]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in leaves(v)]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return [float(value)]
    return []


def scales(header: str, percent: bool) -> tuple[float, ...]:
    """What a recorded value is multiplied by to be printed in this column."""
    if percent:
        return (100,)
    units = {"GFLOP": 1e-9, "ms": 1e3}  # FLOP printed as GFLOP, seconds printed as ms
    return (1, *(scale for unit, scale in units.items() if re.search(rf"\b{unit}\b", header)))


def recorded(printed: float, decimals: int, factors: tuple[float, ...], values: list[float]) -> bool:
    tolerance = 0.5 * 10**-decimals + 1e-9
    return any(abs(v * factor - printed) <= tolerance for v in values for factor in factors)


def load_record(path: Path) -> dict:
    record = json.loads(path.read_text())
    missing = PROVENANCE - set(record)
    assert not missing, f"{path.relative_to(ROOT)}: no {sorted(missing)}"
    return record


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_every_record_says_where_it_came_from(path):
    record = load_record(path)
    assert DATE.search(record["date"]) and record["commit"] and record["command"].startswith("python ")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_table_number_is_in_a_committed_record(doc):
    problems, checked = [], 0
    for line, marker, header, rows in tables(doc.read_text()):
        where = f"{doc.name}:{line}"
        if marker.startswith("Uncommitted"):
            if not DATE.search(marker):
                problems.append(f"{where}: an uncommitted run must give its date")
            continue
        paths = re.findall(r"`(benchmarks/results/[^`]+\.json)`", marker)
        if not paths:
            problems.append(f"{where}: no `Record:` or `Uncommitted` line above the table")
            continue
        values = [x for p in paths for x in leaves(load_record(ROOT / p))]
        for row in rows:
            for column, cell in list(enumerate(row))[1:]:
                for printed, decimals, percent in numbers(cell):
                    checked += 1
                    factors = scales(header[column] if column < len(header) else "", percent)
                    if not recorded(printed, decimals, factors, values):
                        problems.append(f"{where}: {printed} ({cell!r}) is in none of {paths}")
    assert not problems, "\n".join(problems)
    assert checked > 50, f"{doc.name}: only {checked} numbers checked; are its tables still found?"


def test_the_reader_finds_tables_markers_and_numbers():
    text = "## A\nRecord: `benchmarks/results/x.json`\n\n| m | v |\n|---|---|\n"
    text += "| `cmx_b0` | 0.458 ± 0.039 [0.4, 1,079.2] |\n"
    text += "## B\n| m | v |\n|---|---|\n| a | 4.3% |\n"
    text += "Record: `benchmarks/results/y.json`\n\n| m | v |\n|---|---|\n\n| m | w |\n|---|---|\n"
    (first, marker, header, rows), (_, unmarked, _, other), (_, governed, *_), (_, ungoverned, *_) = tables(text)
    assert first == 4 and marker.endswith("x.json`") and header == ["m", "v"] and unmarked == ""
    assert other == [["a", "4.3%"]] and governed.endswith("y.json`") and ungoverned == ""  # the next table only
    assert numbers(rows[0][1]) == [(0.458, 3, False), (0.039, 3, False), (0.4, 1, False), (1079.2, 1, False)]
    assert recorded(4.3, 1, scales("MFU", True), [0.0431]) and not recorded(4.3, 1, scales("MFU", False), [0.0431])
    assert recorded(51.4, 1, scales("forward GFLOP per image", False), [51374686208.0])
    assert not recorded(51.4, 1, scales("img/s", False), [51374686208.0])
    assert recorded(141.6, 1, scales("ms per batch", False), [0.14159]) and not recorded(-0.5, 1, (1,), [0.5])
    assert recorded(0.458, 3, (1,), [0.45849]) and not recorded(0.458, 3, (1,), [0.4586])
