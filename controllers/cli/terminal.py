"""The command line's consoles and its one error printer (a clear line, no traceback, a non-zero exit)."""

from typing import NoReturn

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a clear error (no traceback) and exit."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def comma_ints(flag: str, text: str | None) -> tuple[int, ...]:
    """The positive whole numbers of a comma-separated option (`()` when it is not given); else fail."""
    if text is None:
        return ()
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        fail(f"{flag} {text}: give whole numbers of at least 1 separated by commas, e.g. {flag} 128,256")
    return values
