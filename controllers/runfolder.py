"""The run folder's controller files: scoreboard time series (CSV) and routing decisions (JSONL)."""

import csv
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from controllers.policies import Decision
from controllers.scoreboard import PairStats, Scoreboard
from schema.deployment import SCENARIO_FILE

SCOREBOARD_CSV = "scoreboard.csv"
DECISIONS_JSONL = "decisions.jsonl"
WEIGHTS_CSV = "weights.csv"
SCENARIO_YAML = SCENARIO_FILE
RECORDS_JSONL = "records.jsonl"
WHATIF_JSON = "whatif.json"
REPORT_HTML = "report.html"

SCOREBOARD_FIELDS = ["time", "stale", *PairStats("", "").flat().keys()]


def append_scoreboard(folder: Path, board: Scoreboard) -> None:
    """Append one row per pair (or one empty row marking a stale moment)."""
    path = folder / SCOREBOARD_CSV
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, SCOREBOARD_FIELDS)
        if new:
            w.writeheader()
        if not board.pairs:
            w.writerow({"time": board.time, "stale": int(board.stale)})
        for p in board.pairs.values():
            w.writerow({"time": board.time, "stale": int(board.stale), **p.flat()})


def append_decision(folder: Path, d: Decision) -> None:
    with (folder / DECISIONS_JSONL).open("a") as f:
        f.write(json.dumps(asdict(d)) + "\n")


def append_weights(folder: Path, time: float, weights: dict[str, dict[str, float]], stale: bool) -> None:
    """Routing weights in force at a moment, one row per (class, config)."""
    path = folder / WEIGHTS_CSV
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["time", "sla_class", "config", "weight", "stale"])
        for cls, ws in weights.items():
            for cfg, x in ws.items():
                w.writerow([time, cls, cfg, x, int(stale)])


def read_csv(path: Path) -> list[dict[str, Any]]:
    """Rows with numbers parsed (empty cells become None)."""
    if not path.exists():
        return []
    out = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            out.append({k: _num(v) for k, v in row.items()})
    return out


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            rows.append(json.loads(line))
    return rows


def _num(v: str | None) -> Any:
    if v is None or v == "":
        return None
    try:
        return float(v)
    except ValueError:
        return v
