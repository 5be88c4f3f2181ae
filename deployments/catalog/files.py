"""Reading a user-given file (text, YAML, JSON), with one clear error when it cannot be read."""

import json
from pathlib import Path

import yaml


def read_text(p: Path, what: str) -> str:
    """The file's text; ValueError naming the path and what to give instead when it cannot be read."""
    try:
        return p.read_text()
    except FileNotFoundError:
        raise ValueError(f"{p}: no such file; give {what}") from None
    except OSError as e:
        raise ValueError(f"{p}: cannot read it ({e.strerror}); give {what}") from None


def read_yaml(p: Path, what: str) -> object:
    """The file's YAML (yaml.safe_load); ValueError naming the path when it cannot be read or parsed."""
    try:
        return yaml.safe_load(read_text(p, what))
    except yaml.YAMLError as e:
        raise ValueError(f"{p}: invalid YAML: {e}") from None


def read_json(p: Path, what: str) -> object:
    """The file's JSON; ValueError naming the path and line when it cannot be read or parsed."""
    try:
        return json.loads(read_text(p, what))
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON (line {e.lineno}): {e.msg}") from None
