"""Files a scenario names: paths relative to the scenario's folder, and lengths files."""

import csv
import json
from pathlib import Path

from loadgen.errors import LoadError


def resolve_path(path: Path, base_dir: Path | None) -> Path:
    """A relative path is looked up as given, then next to the scenario file."""
    if path.is_absolute() or base_dir is None or path.exists():
        return path
    return base_dir / path


def read_lengths(path: Path, column: str | None = None) -> list[int]:
    """Integers from a file: one per line, or a column of a CSV (header row) or JSONL file."""
    try:
        text = path.read_text()
    except OSError as e:
        raise LoadError(f"{path}: cannot read lengths file ({e.strerror}); check the path") from None
    except UnicodeDecodeError:
        raise LoadError(f"{path}: not a text file; give one length per line, or a CSV / JSONL column") from None
    where = str(path)
    raw: list[tuple[int, object]] = []
    if path.suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        col = column or (reader.fieldnames[0] if reader.fieldnames else None)
        if col is None or col not in (reader.fieldnames or []):
            raise LoadError(f"{where}: column {col!r} not in the header {reader.fieldnames}; set `column`")
        raw = [(i + 2, row[col]) for i, row in enumerate(reader)]
    elif path.suffix == ".jsonl":
        if column is None:
            raise LoadError(f"{where}: a JSONL lengths file needs `column` (the key holding the length)")
        for i, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    raw.append((i, json.loads(line)[column]))
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise LoadError(f"{where}: row {i}: no {column!r} value in this JSON line") from None
    else:
        raw = [(i, tok) for i, line in enumerate(text.splitlines(), start=1) for tok in line.split()]
    values = []
    for row, v in raw:
        try:
            n = int(float(str(v)))
        except ValueError:
            raise LoadError(f"{where}: row {row}: {v!r} is not a number of tokens") from None
        if n <= 0:
            raise LoadError(f"{where}: row {row}: length {n} must be > 0")
        values.append(n)
    if not values:
        raise LoadError(f"{where}: no lengths in the file")
    return values
