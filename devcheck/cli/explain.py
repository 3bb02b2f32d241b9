"""``devcheck explain``: parse, call, render. No torch here.

Exit codes: 0 a pitfall matched, 1 nothing matched, 2 usage error (unreadable file).
"""

from __future__ import annotations

import json
import sys

import click

from devcheck.cli import pitfalls as _pitfalls_cli

# Pitfalls whose advice depends on the machine reading the explanation.
_MACHINE_DEPENDENT = {"gpu_checkpoint_on_cpu", "no_driver", "cpu_only_wheel", "driver_too_old",
                      "invalid_device_ordinal", "pin_memory_without_accelerator",
                      "cuda_available_but_unused", "gpu_arch_not_in_wheel"}


def machine_context(pitfall_id: str) -> str | None:
    """One line of cheap facts (no torch import) for machine-dependent pitfalls."""
    if pitfall_id not in _MACHINE_DEPENDENT:
        return None
    h = _pitfalls_cli._here()
    if not h["torch_installed"]:
        return "torch is not installed in this environment"
    build = f"torch built with CUDA {h['cuda_build']}" if h["cuda_build"] else \
        "a CPU-only torch build (reinstall from a cuXXX index to use a GPU)"
    driver = "an NVIDIA driver is installed" if h["driver"] else \
        "no NVIDIA driver (so no CUDA here: load checkpoints with map_location='cpu')"
    return f"{build}; {driver}. Full check: devcheck doctor"



@click.command()
@click.argument("source", metavar="[FILE|-]", required=False, default="-")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--limit", default=5, show_default=True, help="At most this many matches.")
@click.option("--here/--no-here", default=True, show_default=True,
              help="Add cheap facts about this machine (driver, torch build) when the "
              "pitfall depends on them. Never imports torch.")
def explain(source: str, as_json: bool, limit: int, here: bool) -> None:
    """Explain a pasted error or traceback (a file, or stdin with '-').

    The text is only read, never executed. Nothing matched: exit code 1.
    """
    from devcheck.pitfalls.explain import decode, explain_text, render

    if source == "-":
        if sys.stdin.isatty() and not as_json:
            click.echo("Paste the error, then Ctrl-D (Ctrl-Z Enter on Windows):", err=True)
        data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else \
            sys.stdin.read().encode("utf-8", "replace")
    else:
        try:
            with open(source, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {source!r}: {exc.strerror}; expected a "
                                     "readable file or '-' for stdin",
                                     param_hint="FILE") from None
    text = decode(data)
    matches = explain_text(text, limit=limit)
    machine = machine_context(matches[0].id) if here and matches else None
    if as_json:
        click.echo(json.dumps({"matches": [m.to_dict() for m in matches],
                               "chars_read": len(text), "this_machine": machine,
                               "hint": None if matches else "run `devcheck doctor`"},
                              indent=2))
    else:
        click.echo(render(matches, len(text)))
        if machine:
            click.echo(f"\nOn this machine: {machine}")
    if not matches:
        sys.exit(1)
