"""explain reads any length in bounded memory (issue 9 item 7), fails cleanly on bad input,
and the new pitfalls' reproductions show what they claim (the CUDA ones on a GPU machine).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devcheck.pitfalls.explain import WINDOW_CHARS, explain_text

DATA = Path(__file__).parent / "data" / "explain"


def top(text: str) -> str | None:
    matches = explain_text(text)
    return matches[0].id if matches else None


# ---------------------------------------------------------------- streaming (issue 9 item 7)


def test_six_megabytes_with_the_error_in_the_middle_matches() -> None:
    line = "2026-11-27 12:00:00 INFO step 12345 loss 0.3456 lr 0.1 all good here\n"
    half = line * (3_000_000 // len(line))
    text = half + "RuntimeError: CUDA error: device-side assert triggered\n" + half
    assert len(text) > 6_000_000
    from devcheck.pitfalls.explain import explain_stream

    result = explain_stream(text[i:i + 65536] for i in range(0, len(text), 65536))
    assert result.matches[0].id == "device_side_assert"
    assert result.chars_read == len(text)  # every character read, and no more claimed


@pytest.mark.parametrize("shift", [-30, -10, 0, 10, 25])
def test_a_message_split_across_two_windows_is_still_seen(shift: int) -> None:
    msg = "RuntimeError: Can't call numpy() on Tensor that requires grad."
    pad = "x" * (WINDOW_CHARS - 20 + shift) + "\n"
    assert top(pad + msg + "\n" + "y" * 5000) == "numpy_on_requires_grad"


def test_streaming_memory_stays_bounded() -> None:
    import tracemalloc

    from devcheck.pitfalls.explain import explain_stream

    chunk = ("INFO step loss 0.1 expected all tensors ((( [[[ ''''\n" * 20_000)  # ~1 MB
    tracemalloc.start()
    try:
        result = explain_stream(chunk for _ in range(16))  # 16 MB, never held at once
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.chars_read == 16 * len(chunk)
    assert peak < 12 * 2**20, f"peak {peak / 2**20:.0f} MiB for a 16 MiB stream"


def test_cli_closed_stdin_is_one_line_exit_2() -> None:
    code = "import sys\nfrom devcheck.cli import main\nsys.argv = ['devcheck', 'explain', '-']\n" \
           "main()\n"
    proc = subprocess.run([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: __import__("os").close(0))
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "stdin" in lines[0] and "closed" in lines[0]
    assert "Traceback" not in proc.stderr


def test_cli_limit_zero_is_rejected_and_limit_one_works(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from devcheck.cli import cli

    runner = CliRunner()
    bad = runner.invoke(cli, ["explain", "-", "--limit", "0"], input=b"KeyError: 1\n")
    assert bad.exit_code == 2 and "--limit" in bad.output
    one = runner.invoke(cli, ["explain", str(DATA / "learner_windows_notebook.txt"),
                              "--limit", "1", "--json", "--no-here"])
    import json

    data = json.loads(one.output)
    assert one.exit_code == 0 and len(data["matches"]) == 1
    assert data["chars_read"] == len((DATA / "learner_windows_notebook.txt").read_text())
    assert {"confidence", "fixes", "notes", "source_label"} <= set(data["matches"][0])
    missing = runner.invoke(cli, ["explain", str(tmp_path / "nope.txt")])
    assert missing.exit_code == 2 and len(missing.output.strip().splitlines()) == 1
    folder = runner.invoke(cli, ["explain", str(tmp_path)])
    assert folder.exit_code == 2 and "cannot read" in folder.output


# ---------------------------------------------------------------- the reproductions


def test_headline_pitfall_cpu_view_shows_the_mechanism_and_fakes_nothing() -> None:
    from devcheck.pitfalls import Skip
    from devcheck.pitfalls import default_device_sampler_generator as sampler

    with pytest.raises(Skip) as info:
        sampler.reproduce("cpu")
    why = str(info.value)
    assert why.startswith("the CUDA error itself needs a GPU")
    assert "torch/utils/data/sampler.py" in why and "torch.randperm(10" in why
    assert "device=None), which the default-device mode ran on meta" in why
    assert "generator on cpu" in why and "main process" in why
    import torch

    assert str(torch.get_default_device()) == "cpu"  # restored


def test_default_device_not_applied_reproduces_on_cpu_with_meta() -> None:
    from devcheck.pitfalls import default_device_not_applied as dd

    with pytest.raises(RuntimeError) as info:
        dd.reproduce("cpu")
    text = str(info.value)
    assert "W (torch.normal) on cpu" in text and "b (torch.zeros) on meta" in text
    assert "X (torch.from_numpy) on cpu" in text
    assert dd.PITFALL.matches_symptom(f"RuntimeError: {text}")
    assert "on meta" in dd.fixed("cpu")


def test_gloo_collective_timeout_is_the_nccl_pitfalls_cpu_form() -> None:
    from devcheck.pitfalls import nccl_error

    with pytest.raises(RuntimeError) as info:
        nccl_error.reproduce("cpu")
    text = f"RuntimeError: {info.value}"
    assert "Timed out waiting" in text and nccl_error.PITFALL.matches_symptom(text)
    assert top(text) == "nccl_error"


@pytest.mark.requires_cuda
@pytest.mark.parametrize("pid", ["cuda_out_of_memory", "cudnn_error", "cublas_error",
                                 "illegal_memory_access", "nccl_error"])
def test_cuda_reproductions_raise_their_own_symptom(pid: str) -> None:
    from devcheck.pitfalls import lab

    r = lab.run_pitfalls([pid], "cuda", timeout_s=240)[0]
    if r.status == "skipped":
        pytest.skip(r.reason)
    assert r.status == "passed", r.reason
    assert r.reproduce is not None and top(r.reproduce.error_text) == pid


def test_an_endless_input_stops_at_the_cap_and_says_so(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    import itertools
    import json

    from click.testing import CliRunner

    from devcheck.cli import cli
    from devcheck.pitfalls import _stream
    from devcheck.pitfalls.explain import explain_stream

    monkeypatch.setattr(_stream, "MAX_READ_CHARS", 3 << 20)
    endless = itertools.repeat("\0" * 65536)  # like /dev/zero: never ends
    result = explain_stream(endless)
    assert result.truncated and 3 << 20 <= result.chars_read < (3 << 20) + (1 << 21)
    big = tmp_path / "big.log"
    big.write_text("INFO step\n" * 500_000 + "RuntimeError: CUDA error: device-side assert "
                   "triggered\n")
    data = json.loads(CliRunner().invoke(cli, ["explain", str(big), "--json", "--no-here"])
                      .output)
    assert data["truncated"] is True and data["matches"] == []  # the error was past the cap
    text = CliRunner().invoke(cli, ["explain", str(big), "--no-here"]).output
    assert "Read only the first" in text and "tail -c" in text


def test_cli_closed_or_full_stdout_is_one_line_error(tmp_path: Path) -> None:
    err = DATA / "linux_no_driver.txt"
    code = ("import sys\nfrom devcheck.cli import main\n"
            f"sys.argv = ['devcheck', 'explain', {str(err)!r}]\nmain()\n")
    closed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, preexec_fn=lambda: __import__("os").close(1))
    assert closed.returncode == 1 and "stdout is closed" in closed.stderr
    assert len(closed.stderr.strip().splitlines()) == 1
    import os

    if os.path.exists("/dev/full"):
        with open("/dev/full", "w") as full:
            proc = subprocess.run([sys.executable, "-c", code], stdout=full,
                                  stderr=subprocess.PIPE, text=True, timeout=120)
        assert proc.returncode == 1 and "No space left on device" in proc.stderr
        assert "Traceback" not in proc.stderr
