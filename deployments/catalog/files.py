"""Reading a user-given file, with one clear error when it cannot be read."""

from pathlib import Path


def read_text(p: Path, what: str) -> str:
    """The file's text; ValueError naming the path and what to give instead when it cannot be read."""
    try:
        return p.read_text()
    except FileNotFoundError:
        raise ValueError(f"{p}: no such file; give {what}") from None
    except OSError as e:
        raise ValueError(f"{p}: cannot read it ({e.strerror}); give {what}") from None
