"""``devcheck.watch()``, ``%%devcheck_watch`` and ``devcheck gpus --watch``'s frames."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import fake_pynvml as fk

import devcheck
from devcheck.run.gpuwatch import CLEAR, frames
from devcheck.run.watcher import Watch, parse_magic_line

GiB = 1024**3


def test_watch_attributes_this_process_and_its_children(tmp_path: Path) -> None:
    sc = fk.one_gpu(memory_total=8 * GiB, util_gpu=88,
                    processes=[fk.FakeProcess(os.getpid(), 3 * GiB)])
    module = fk.build_module(sc)
    with devcheck.watch(interval=0.02, import_pynvml=lambda: module) as w:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.0)"])
        deadline = time.monotonic() + 20
        while not any(child.pid in {p.pid for p in s.procs} for s in w.timeline):
            assert time.monotonic() < deadline, "the child never showed up in the tree"
            time.sleep(0.02)
        child.wait()
    assert isinstance(w, Watch)
    summary = w.summary()
    assert summary.kind == "watch" and summary.stats.gpus[0].job_samples > 0
    assert summary.devices[0].startswith("GPU 0 (NVIDIA GeForce RTX 4090): 88% kernel-active")
    assert "devcheck.watch()" in str(summary)
    png = w.plot(tmp_path / "t.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    n = len(w.timeline)
    time.sleep(0.1)
    assert len(w.timeline) == n  # stopped at the end of the with-block


def test_watch_without_gpu_says_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    module = fk.build_module(fk.library_missing())
    with devcheck.watch(interval=0.02, import_pynvml=lambda: module) as w:
        sum(range(200_000))
    assert w.summary().devices[0] == "no NVIDIA GPU here: the job ran on the CPU"
    assert w.timeline and w.timeline[0].gpus == ()


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "0.25"])
def test_watch_rejects_bad_intervals(bad: object) -> None:
    with pytest.raises(ValueError, match="expected seconds between samples"):
        devcheck.watch(interval=bad)  # type: ignore[arg-type]


def test_import_devcheck_stays_light() -> None:
    code = ("import sys, devcheck; devcheck.watch; "
            "print(sorted(m for m in ('torch', 'matplotlib', 'pynvml') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize("line, expected", [
    ("", (0.25, None)), ("-i 0.5", (0.5, None)), ("--interval 1 --plot 'a b.png'",
                                                   (1.0, "a b.png"))])
def test_magic_line(line: str, expected: tuple[float, str | None]) -> None:
    assert parse_magic_line(line) == expected


@pytest.mark.parametrize("line, message", [
    ("-i", "needs a value"), ("-i x", "is not a number"), ("-i nan", "outside"),
    ("--bogus", "unknown argument"), ("'", "cannot parse")])
def test_magic_line_errors(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_magic_line(line)


def test_cell_magic_in_ipython(tmp_path: Path) -> None:
    pytest.importorskip("IPython")
    png = tmp_path / "cell.png"
    code = (
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "sh = InteractiveShell.instance()\n"
        "sh.run_cell('%load_ext devcheck')\n"
        f"sh.run_cell('%%devcheck_watch -i 0.05 --plot {png}\\nimport time\\n"
        "t = time.process_time()\\nwhile time.process_time() < t + 0.3: pass\\n"
        "x = sum(range(2_000_000))\\nprint(\"cell ran\", x)')\n"
        "print('kept', len(sh.user_ns['_devcheck_watch'].timeline))\n"
        "sh.run_cell('%%devcheck_watch -i nope\\n1')\n"
        "sh.run_cell('%unload_ext devcheck')\n"
        "print('after unload', 'devcheck_watch' in sh.magics_manager.magics['cell'])\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "cell ran 1999999000000" in res.stdout
    assert "%%devcheck_watch" in res.stdout and "CPU:" in res.stdout
    assert int(res.stdout.split("kept ")[1].split()[0]) >= 1
    assert png.exists()
    assert "-i 'nope' is not a number" in res.stderr
    assert "after unload False" in res.stdout


def test_gpus_watch_json_stream_and_lost_gpu() -> None:
    sc = fk.two_gpus()
    module = fk.build_module(sc)
    stream = frames(0.01, True, count=4, import_pynvml=lambda: module)
    first = json.loads(next(stream))
    assert first["v"] == 1 and first["kind"] == "gpus" and len(first["gpus"]) == 2
    assert first["gpus"][1]["processes"][0] == {"pid": 4242, "used_memory_bytes": 79000 * 1024**2,
                                                "sm_util_pct": None, "mem_util_pct": None}
    sc.gpus[0].lost = "NVMLError_GpuIsLost"
    second = json.loads(next(stream))
    assert second["gpus"][0]["lost"] is True
    assert second["events"][0]["kind"] == "gpu_lost"
    rest = list(stream)
    assert len(rest) == 2 and all(json.loads(r)["gpus"][0]["lost"] for r in rest)


def test_gpus_watch_text_and_no_driver() -> None:
    module = fk.build_module(fk.two_gpus())
    text = list(frames(0.01, False, tty=True, count=2, import_pynvml=lambda: module))
    assert len(text) == 2 and text[0].startswith(CLEAR)
    assert "[1] NVIDIA H100 80GB HBM3  util 100%" in text[0] and "pid 4242" in text[0]
    none = fk.build_module(fk.driver_not_loaded())
    only = list(frames(0.01, False, count=5, import_pynvml=lambda: none))
    assert len(only) == 1 and only[0].startswith("no NVIDIA GPU here:")
    doc = json.loads(list(frames(0.01, True, import_pynvml=lambda: none))[0])
    assert doc["gpus"] == [] and "DriverNotLoaded" in doc["nvml_error"]


def test_epoch_watch_gives_each_epoch_its_own_figures() -> None:
    from devcheck.run.epochs import EpochWatch

    sc = fk.one_gpu(memory_total=8 * GiB, memory_used=2 * GiB, util_gpu=10,
                    processes=[fk.FakeProcess(os.getpid(), GiB)])
    module = fk.build_module(sc)

    def wait_samples(ew: EpochWatch, n: int) -> None:
        start = len(ew.watch.timeline)
        deadline = time.monotonic() + 20
        while len(ew.watch.timeline) < start + n:
            assert time.monotonic() < deadline
            time.sleep(0.01)

    with EpochWatch(0.02, import_pynvml=lambda: module) as ew:
        wait_samples(ew, 4)
        first = ew.epoch_end()
        sc.gpus[0].util_gpu, sc.gpus[0].memory_used = 90, 6 * GiB
        sc.gpus[0].processes = [fk.FakeProcess(os.getpid(), 5 * GiB)]
        wait_samples(ew, 4)
        second = ew.epoch_end()
    assert first["gpu_util_mean_pct"] == 10.0 and first["gpu_memory_peak_bytes"] == 2 * GiB
    assert first["gpu_job_memory_peak_bytes"] == GiB
    assert second["gpu_util_mean_pct"] >= 75  # >= 5 samples at 90, at most 1 before the change
    assert second["gpu_job_memory_peak_bytes"] == 5 * GiB
    assert first["gpus"][0]["index"] == 0 and first["watch_samples"] >= 4
    json.dumps(second)


def test_epoch_watch_without_gpu() -> None:
    from devcheck.run.epochs import EpochWatch

    module = fk.build_module(fk.library_missing())
    with EpochWatch(0.02, import_pynvml=lambda: module) as ew:
        time.sleep(0.1)
        figures = ew.epoch_end()
    assert figures["gpu_util_mean_pct"] is None and figures["gpus"] == []


def test_tick_now_samples_out_of_schedule() -> None:
    from devcheck.run.sampler import Sampler

    got: list[object] = []
    module = fk.build_module(fk.no_gpus())
    sampler = Sampler(os.getpid(), interval_s=3600, sink=got.append,
                      import_pynvml=lambda: module)
    assert not sampler.tick_now()  # not started
    sampler.start()
    sampler.opened.wait(10)
    deadline = time.monotonic() + 10
    while not got:  # the first, scheduled sample
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert sampler.tick_now() and sampler.tick_now()
    assert len(got) == 3
    sampler.stop()
    assert len(got) == 4  # stop takes a last one
    assert not sampler.tick_now()
