"""A command group that imports a command's module only when that command runs (or shows its own help).

`parallax --help` lists every command from a static table (name, module, summary) without importing any
command module, so neither Ray Serve, matplotlib nor the report load for it; `parallax validate` loads only
what validating needs. The table is the one place a command is registered."""

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import typer
from typer.core import TyperCommand, TyperGroup
from typer.main import get_command_from_info, get_group
from typer.models import CommandInfo


@dataclass(frozen=True)
class LazyCommand:
    """Where a command lives and its line in the command list."""
    module: str     # imported when the command runs
    attribute: str  # the command's function, or a typer.Typer of subcommands
    summary: str    # its line in `parallax --help`


class _Unloaded(TyperCommand):
    """What the command list shows of a command whose module is not imported yet."""


class LazyCommandGroup(TyperGroup):
    """A TyperGroup whose commands come from `table`, each module imported when its command is resolved."""
    table: ClassVar[Mapping[str, LazyCommand]] = {}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name, spec in self.table.items():
            self.commands.setdefault(name, _Unloaded(name=name, short_help=spec.summary, help=spec.summary))

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:  # ctx: the click Context typer vendors
        name = args[0] if args else None
        if name is not None and isinstance(self.commands.get(name), _Unloaded):
            self.commands[name] = self.load(name)
        return super().resolve_command(ctx, args)

    def load(self, name: str) -> TyperCommand | TyperGroup:
        """Import `name`'s module and build its command (a group for a typer.Typer of subcommands)."""
        spec = self.table[name]
        target = getattr(importlib.import_module(spec.module), spec.attribute)
        if isinstance(target, typer.Typer):
            group = get_group(target)
            group.name, group.short_help = name, spec.summary
            return group
        command = get_command_from_info(CommandInfo(name=name, callback=target, short_help=spec.summary),
                                        pretty_exceptions_short=True, rich_markup_mode=self.rich_markup_mode)
        assert isinstance(command, TyperCommand)
        return command
