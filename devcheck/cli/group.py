"""The ``devcheck`` click group: a thin, lazy one.

Subcommands live in small modules (``doctor.py``, ``pitfalls.py``, ``explain.py``, ...)
and are imported only when invoked, so ``devcheck explain`` never pays for what
``devcheck doctor`` needs, and nothing here imports torch. Exit codes: 0 fine, 1 error
findings / failed checks, 2 usage errors (click's own).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

# command name -> (module, attribute, one-line help shown by ``devcheck --help``)
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "doctor": ("devcheck.cli.doctor", "doctor", "Can torch use the GPU, and if not, why not."),
    "gpus": ("devcheck.cli.doctor", "gpus", "The NVML view of the GPUs (never imports torch)."),
    "explain": ("devcheck.cli.explain", "explain", "Paste an error: get its cause and fix."),
    "pitfalls": ("devcheck.cli.pitfalls", "pitfalls", "Reproduce, explain and fix pitfalls."),
    "lint": ("devcheck.cli.lint", "lint", "Find device pitfalls in .py and .ipynb source."),
    "run": ("devcheck.cli.run", "run", "Run a command; show how it used the GPU, and why "
            "it died."),
    "dist": ("devcheck.cli.dist", "dist", "torch.distributed: works? how fast? who hangs?"),
}


class _LazyGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        # click turns a Ctrl-C into "Aborted!" and exit 1, which here means "error findings"
        # (doctor) or "no match" (explain): say it was an interrupt, exit 130 like a shell.
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            command = " ".join(filter(None, ("devcheck", ctx.invoked_subcommand)))
            try:
                click.echo(f"{command}: interrupted", err=True)
            except OSError:
                pass
            sys.exit(130)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = _COMMANDS.get(cmd_name)
        if spec is None:
            return None
        module, attr, _ = spec
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Listing help must not import every subcommand module.
        rows = [(name, _COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup)
@click.version_option(package_name="devcheck")
def cli() -> None:
    """devcheck: is PyTorch really using your GPU, and if not, why not?"""
