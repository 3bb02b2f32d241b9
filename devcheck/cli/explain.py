"""``devcheck explain``: parse, call, render. No torch here.

The input (a file, or stdin with ``-``) is streamed in chunks of ``READ_BYTES`` into the
matcher, so a log of any size is read whole in bounded memory, and ``chars_read`` is what
was really read.

Exit codes: 0 a pitfall matched, 1 nothing matched, 2 usage error (unreadable file, closed
stdin, bad option).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from typing import IO, Any

import click

from devcheck.cli.params import ensure_stdout

# Pitfalls whose advice uses this machine's GPU memory (other processes, from NVML).
_MEMORY = frozenset({"cuda_out_of_memory", "cublas_error", "cudnn_error"})


class InputError(click.ClickException):
    """One line, exit code 2: the input could not be read."""

    exit_code = 2


def machine_context(pitfall_id: str) -> str | None:
    """One line of cheap facts (no torch import) for machine-dependent pitfalls: the probe
    (devcheck.probe.devices) and the rule (devcheck.rules.pitfalls) own both."""
    from devcheck.probe import devices
    from devcheck.rules import pitfalls as rules

    if pitfall_id not in rules.MACHINE_DEPENDENT:
        return None
    return rules.machine_context(pitfall_id, devices.probe_machine())


def machine_facts(pitfall_id: str) -> Any:
    """This machine, for advice that depends on it: platform, NVIDIA GPUs on the PCI bus,
    driver and wheel CUDA, and (for memory errors) who holds GPU memory now, from NVML.
    Never imports torch; each probe is asked only when the top pitfall needs it."""
    from devcheck.pitfalls._advice import _CUDA_SETUP, Machine
    from devcheck.probe import devices
    from devcheck.probe.libcuda import cuda_version_str

    m = devices.probe_machine()
    nvidia: int | None = None
    if pitfall_id in _CUDA_SETUP and sys.platform.startswith("linux"):
        from devcheck.probe.host import probe_host

        nvidia = probe_host().nvidia_pci_devices
    memory: tuple[str, ...] = ()
    if pitfall_id in _MEMORY and m.driver:
        memory = _gpu_memory_lines()
    return Machine(platform=sys.platform, nvidia_gpus=nvidia,
                   driver_cuda=cuda_version_str(m.driver_cuda_version)
                   if m.driver_cuda_version else None,
                   torch_cuda=m.cuda_build, torch_installed=m.torch_installed,
                   gpu_memory=memory)


def _gpu_memory_lines() -> tuple[str, ...]:
    from devcheck.facts import printable
    from devcheck.probe.nvml import probe_nvml

    nv = probe_nvml(timeout_s=3.0)
    lines = []
    for g in nv.gpus:
        used, total = g.memory_used_bytes, g.memory_total_bytes
        head = f"GPU {g.index} ({printable(g.name or '?')})"
        if used is not None and total:
            head += f" {used / 2**30:.1f} of {total / 2**30:.1f} GiB used"
        procs = ", ".join(f"pid {p.pid} {printable(p.name or '?')} "
                          + (f"{p.used_memory_bytes / 2**30:.1f} GiB"
                             if p.used_memory_bytes is not None else "(memory not reported)")
                          for p in g.processes[:6])
        lines.append(head + (f" by {procs}" if procs else ", no process listed"))
    return tuple(lines)


def _chunks(stream: Any, what: str) -> Iterator[bytes]:
    from devcheck.pitfalls.explain import READ_BYTES

    while True:
        try:
            chunk = stream.read(READ_BYTES)
        except OSError as exc:
            raise InputError(f"cannot read {what}: {exc.strerror or exc}; expected a readable "
                             "file or '-' for text piped in") from None
        if not chunk:
            return
        yield chunk


def _stdin() -> Any:
    stdin = sys.stdin
    if stdin is None or getattr(stdin, "closed", False):
        raise InputError("cannot read stdin: it is closed (started with <&- or no input "
                         "attached); expected text on stdin, e.g. `pbpaste | devcheck explain "
                         "-`, or a FILE argument")
    buffer = getattr(stdin, "buffer", None)
    if buffer is None:  # a text-only stream (some IDEs, tests): encode what it gives
        return _Encoded(stdin)
    return buffer


def _check_stdout() -> None:
    """Fail before reading when there is nowhere to print (``devcheck explain f >&-``)."""
    ensure_stdout("the explanation", "devcheck explain err.txt > explained.txt")


def _emit(text: str) -> None:
    """Print, or say in one line why the explanation could not be written."""
    try:
        click.echo(text)
        sys.stdout.flush()
    except (OSError, ValueError, AttributeError) as exc:  # a full disk, a closed pipe
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # the exit-time flush must not fail again
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise click.ClickException(f"could not write the explanation to stdout: {why}; "
                                   "rerun with stdout going to a terminal or a writable "
                                   "file") from None


class _Encoded:
    """A bytes view of a text stream, read in chunks."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def read(self, n: int) -> bytes:
        return self.stream.read(n).encode("utf-8", "replace")


@click.command()
@click.argument("source", metavar="[FILE|-]", required=False, default="-")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--limit", default=5, show_default=True, type=click.IntRange(min=1),
              help="At most this many matches (1 or more).")
@click.option("--here/--no-here", default=True, show_default=True,
              help="Fit the advice to this machine (macOS, no NVIDIA GPU, other processes "
              "holding GPU memory) and add its driver/torch facts. Never imports torch.")
def explain(source: str, as_json: bool, limit: int, here: bool) -> None:
    """Explain a pasted error or traceback (a file, or stdin with '-').

    The text is only read, never executed; any length is read in bounded memory.
    Nothing matched: exit code 1.
    """
    from devcheck.pitfalls.explain import MAX_READ_CHARS, decode_chunks, explain_stream, render

    _check_stdout()
    if source == "-":
        stream = _stdin()
        if not as_json and sys.stdin is not None and sys.stdin.isatty():
            click.echo("Paste the error, then Ctrl-D (Ctrl-Z Enter on Windows):", err=True)
        result = explain_stream(decode_chunks(_chunks(stream, "stdin")), limit=limit)
    else:
        try:
            f = open(source, "rb")  # noqa: SIM115 - closed below; chunks stream from it
        except OSError as exc:
            raise InputError(f"cannot read {source!r}: {exc.strerror or exc}; expected a "
                             "readable file or '-' for stdin") from None
        with f:
            result = explain_stream(decode_chunks(_chunks(f, repr(source))), limit=limit)
    machine = None
    if here and result.matches:
        machine = machine_facts(result.matches[0].id)
        result = result.with_machine(machine)
    context = machine_context(result.matches[0].id) if here and result.matches else None
    stopped = (f"Read only the first {result.chars_read} characters (explain stops at "
               f"{MAX_READ_CHARS}: an input may never end); for a longer log pass its end, "
               "e.g. `tail -c 50M ci.log | devcheck explain -`") if result.truncated else None
    if as_json:
        _emit(json.dumps({"matches": [m.to_dict() for m in result.matches],
                          "chars_read": result.chars_read, "truncated": result.truncated,
                          "this_machine": context,
                          "machine": machine.to_dict() if machine else None,
                          "text_facts": result.facts.to_dict(),
                          "hint": None if result.matches else "run `devcheck doctor`"},
                         indent=2))
    else:
        _emit(render(result.matches, result.chars_read)
              + (f"\n\nOn this machine: {context}" if context else "")
              + (f"\n\n{stopped}" if stopped else ""))
    if not result.matches:
        sys.exit(1)
