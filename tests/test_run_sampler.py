"""The sampler against scenario fakes of NVML whose process lists hold *real* pids.

The job is a real process tree (a child that starts a grandchild); the fake GPU lists the
grandchild's pid, so attribution goes through the real /proc walk. Scenarios: a two-level
tree, CUDA_VISIBLE_DEVICES remapping (indices and UUIDs), a GPU lost mid-run, fields the
GPU does not support, no NVML at all, and a whole ``run_job`` ending in a CUDA OOM.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import fake_pynvml as fk

from devcheck.run.job import run_job
from devcheck.run.report import device_lines, summarize
from devcheck.run.sampler import Sampler
from devcheck.run.timeline import Sample

GiB = 1024**3
OTHER_PID = 4_000_000  # beyond pid_max: never a process of ours


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A child that starts a grandchild; yields (child pid, grandchild pid)."""
    pid_file = tmp_path / "grandchild"
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import subprocess, sys, time, pathlib
        g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        pathlib.Path({str(pid_file)!r}).write_text(str(g.pid))
        try:
            time.sleep(60)
        finally:
            g.kill()
    """)])
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()):
        assert time.monotonic() < deadline, "the grandchild never started"
        time.sleep(0.02)
    try:
        yield child.pid, int(pid_file.read_text())
    finally:
        child.kill()
        child.wait()


def sample_for(sc: fk.Scenario, root: int, n: int = 6, *, visible: str | None = None,
               between: Any = None) -> tuple[Sampler, list[Sample]]:
    samples: list[Sample] = []
    module = fk.build_module(sc)
    sampler = Sampler(root, interval_s=0.02, sink=samples.append, visible_devices=visible,
                      import_pynvml=lambda: module)
    sampler.start()
    deadline = time.monotonic() + 30
    while len(samples) < n and time.monotonic() < deadline:
        if between is not None and len(samples) >= n // 2:
            between()
            between = None
        time.sleep(0.01)
    sampler.stop()
    return sampler, samples


def stats_of(sampler: Sampler, samples: list[Sample]) -> Any:
    acc = sampler.accumulator()
    for s in samples:
        acc.add(s)
    return acc.freeze()


def test_grandchild_on_the_gpu_is_the_jobs(tree: tuple[int, int]) -> None:
    child, grandchild = tree
    sc = fk.one_gpu(memory_total=8 * GiB, memory_used=int(7.7 * GiB), util_gpu=23,
                    processes=[fk.FakeProcess(grandchild, int(7.6 * GiB)),
                               fk.FakeProcess(OTHER_PID, 50 * 1024**2)],
                    process_util=[fk.FakeProcessUtil(grandchild, 10, 21, 3)])
    sampler, samples = sample_for(sc, child)
    pids = {p.pid for p in samples[-1].procs}
    assert {child, grandchild} <= pids
    procs = {p.pid: p for p in samples[-1].gpus[0].processes or ()}
    assert procs[grandchild].in_job and not procs[OTHER_PID].in_job
    assert samples[-1].gpus[0].job_memory_bytes == int(7.6 * GiB)
    stats = stats_of(sampler, samples)
    g = stats.gpus[0]
    assert g.job_samples == len(samples) and g.util_mean_pct == 23.0
    assert g.job_sm_util_mean_pct is not None  # the one NVML sample was seen once
    line = device_lines(stats)[0]
    assert line.startswith("GPU 0 (NVIDIA GeForce RTX 4090): 23% kernel-active, peak memory "
                           "7.7 / 8.0 GiB")
    ids = {v.id for v in summarize(["x"], 0, stats, None).verdicts}
    assert {"near_oom", "gpu_competing"} <= ids and "cpu_only" not in ids


def test_a_gpu_the_job_never_touched_gives_the_cpu_verdict(tree: tuple[int, int]) -> None:
    child, _ = tree
    # a real process outside the job's tree (this test's own) holds the GPU
    sc = fk.one_gpu(processes=[fk.FakeProcess(os.getpid(), GiB)])
    sampler, samples = sample_for(sc, child)
    summary = summarize(["x"], 0, stats_of(sampler, samples), None)
    assert summary.devices[0] == "the job never created a CUDA context: it ran on the CPU"
    cpu_only = [v for v in summary.verdicts if v.id == "cpu_only"]
    assert cpu_only and cpu_only[0].pitfall == "cuda_available_but_unused"


def test_pids_from_another_namespace_make_attribution_unknown(tree: tuple[int, int]) -> None:
    """In a container NVML may list the host's pids: never claim "it ran on the CPU"."""
    child, _ = tree
    sc = fk.one_gpu(util_gpu=87, processes=[fk.FakeProcess(OTHER_PID, 6 * GiB)])
    sampler, samples = sample_for(sc, child)
    assert samples[-1].gpus[0].processes[0].unknown_pid  # type: ignore[index]
    summary = summarize(["x"], 0, stats_of(sampler, samples), None)
    assert summary.devices[0].startswith("NVML lists GPU processes by pids this container")
    assert summary.devices[1].startswith("GPU 0 (NVIDIA GeForce RTX 4090): 87% kernel-active "
                                         "during the run")
    verdict = [v for v in summary.verdicts if v.id == "gpu_use_unknown"][0]
    assert verdict.title == "could not tell whether the job used a GPU"
    assert "--pid=host" in (verdict.fix or "")


@pytest.mark.parametrize("visible", ["1", "GPU-bbbb", "GPU-bb", "1,0"])
def test_cuda_visible_devices_remaps_to_torch_indices(tree: tuple[int, int],
                                                      visible: str) -> None:
    child, grandchild = tree
    sc = fk.two_gpus()
    sc.gpus[1].processes = [fk.FakeProcess(grandchild, 2 * GiB)]
    sampler, samples = sample_for(sc, child, visible=visible)
    gpus = {g.index: g for g in samples[-1].gpus}
    assert gpus[1].torch_index == 0
    assert gpus[0].torch_index == (1 if visible == "1,0" else None)
    stats = stats_of(sampler, samples)
    assert device_lines(stats)[0].startswith("GPU 1 (cuda:0) (NVIDIA H100 80GB HBM3)")


def test_invalid_visible_entry_is_explained(tree: tuple[int, int]) -> None:
    child, _ = tree
    sampler, samples = sample_for(fk.two_gpus(), child, n=2, visible="0,7,1")
    assert sampler.visible.torch_index == {0: 0}
    assert "'7'" in (sampler.visible.note or "") and "ignores '7,1'" in (sampler.visible.note
                                                                          or "")


@pytest.mark.parametrize("error", ["NVMLError_GpuIsLost", "NVMLError_Unknown"])
def test_gpu_lost_mid_run_is_an_event(tree: tuple[int, int], error: str) -> None:
    child, grandchild = tree
    sc = fk.two_gpus()
    sc.gpus[0].processes = [fk.FakeProcess(grandchild, GiB)]

    def lose() -> None:
        sc.gpus[0].lost = error

    sampler, samples = sample_for(sc, child, n=8, between=lose)
    lost = [e for s in samples for e in s.events if e.kind == "gpu_lost"]
    assert len(lost) == 1 and lost[0].gpu == 0
    assert samples[-1].gpus[0].lost and not samples[-1].gpus[1].lost
    calls_after = sc.calls.count("nvmlDeviceGetMemoryInfo")
    stats = stats_of(sampler, samples)
    assert stats.gpus[0].lost_at_s is not None
    summary = summarize(["x"], 0, stats, None)
    assert summary.verdicts[0].id == "gpu_lost" and summary.verdicts[0].severity == "error"
    assert calls_after == sc.calls.count("nvmlDeviceGetMemoryInfo")  # nothing asked since


def test_unsupported_fields_are_asked_once(tree: tuple[int, int]) -> None:
    child, _ = tree
    sc = fk.not_supported_fields()
    sampler, samples = sample_for(sc, child, n=5)
    assert sc.calls.count("nvmlDeviceGetPowerUsage") == 1
    assert samples[-1].gpus[0].power_w is None and samples[-1].gpus[0].processes is None
    events = [e for s in samples for e in s.events if e.kind == "field_unsupported"]
    assert {e.message.split(": ")[1].split(" ")[0] for e in events} >= {"power", "processes"}
    summary = summarize(["x"], 0, stats_of(sampler, samples), None)
    unknown = [v for v in summary.verdicts if v.id == "gpu_use_unknown"]
    assert unknown and unknown[0].title == "could not tell whether the job used a GPU"
    assert "cpu_only" not in {v.id for v in summary.verdicts}


def test_no_nvml_is_the_no_gpu_verdict(tree: tuple[int, int]) -> None:
    child, _ = tree
    sampler, samples = sample_for(fk.library_missing(), child, n=3)
    assert samples and all(s.gpus == () for s in samples)
    summary = summarize(["x"], 0, stats_of(sampler, samples), None)
    assert summary.devices[0] == "no NVIDIA GPU here: the job ran on the CPU"
    ids = {v.id for v in summary.verdicts}
    assert "no_gpu" in ids and not ids & {"cpu_only", "input_bound", "launch_bound"}
    assert ids <= {"no_gpu", "cpu_contended"}  # the second depends on this machine's load


def test_throttle_reasons_and_clock_are_read(tree: tuple[int, int]) -> None:
    child, grandchild = tree
    sc = fk.one_gpu(throttle_mask=0x44, sm_clock_mhz=1200,
                    processes=[fk.FakeProcess(grandchild, GiB)], util_gpu=99)
    sampler, samples = sample_for(sc, child)
    assert samples[-1].gpus[0].throttle == ("sw_power_cap", "hw_thermal")
    assert samples[-1].gpus[0].sm_clock_mhz == 1200
    verdicts = summarize(["x"], 0, stats_of(sampler, samples), None).verdicts
    throttled = [v for v in verdicts if v.id == "throttled"]
    assert throttled and throttled[0].severity == "warn" and "hw_thermal" in throttled[0].evidence


class _PidFileProcs(list):  # type: ignore[type-arg]
    """A process list that reads the job's GPU pid from a file at each NVML call."""

    def __init__(self, path: Path, memory: int) -> None:
        super().__init__()
        self.path, self.memory = path, memory

    def __iter__(self) -> Iterator[fk.FakeProcess]:
        procs = [fk.FakeProcess(OTHER_PID, 3 * GiB)]
        if self.path.exists() and self.path.read_text():
            procs.append(fk.FakeProcess(int(self.path.read_text()), self.memory))
        return iter(procs)


def test_run_job_oom_crash_shows_this_machines_facts(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    sc = fk.one_gpu(memory_total=8 * GiB, memory_used=8 * GiB - 1,
                    processes=_PidFileProcs(pid_file, 5 * GiB))  # type: ignore[arg-type]
    module = fk.build_module(sc)
    err = tmp_path / "stderr"
    with open(err, "wb") as sink:
        outcome = run_job([sys.executable, "-c", textwrap.dedent(f"""
            import os, sys, time, pathlib
            pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))
            time.sleep(0.6)
            print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. "
                  "GPU 0 has a total capacity of 8.00 GiB", file=sys.stderr)
            sys.exit(1)
        """)], interval_s=0.05, out_dir=tmp_path, plot=False, import_pynvml=lambda: module,
                          tee_target_fd=sink.fileno())
    assert outcome.job.exit_code == 1
    assert "CUDA out of memory" in err.read_text()  # teed through
    crash = outcome.summary.crash
    assert crash is not None and crash.out_of_memory
    facts = "\n".join(crash.machine_facts)
    assert f"pid {OTHER_PID}, held 3.0 GiB on GPU 0" in facts
    assert "the job's processes 5.0 GiB" in facts
    lines = (tmp_path / "timeline.jsonl").read_text().splitlines()
    assert '"kind":"start"' in lines[0] and '"kind":"end"' in lines[-1]
    assert os.path.exists(tmp_path / "summary.json")


def test_a_wedged_driver_costs_the_run_no_more_than_the_join(tmp_path: Path) -> None:
    """nvmlInit hanging: the job runs and exits as usual; the summary says why there is
    no sample instead of claiming there is no GPU."""
    sc = fk.hung_driver(60.0)
    module = fk.build_module(sc)
    outcome = run_job([sys.executable, "-c", "raise SystemExit(5)"], interval_s=0.05,
                      out_dir=tmp_path, plot=False, import_pynvml=lambda: module)
    assert outcome.job.exit_code == 5
    assert sc.calls == ["nvmlInit"]  # returned while nvmlInit still hangs
    assert outcome.summary.devices[0].startswith("no sample was taken: the sampler never "
                                                 "started: NVML (nvmlInit) did not answer")
    assert "no_gpu" not in {v.id for v in outcome.summary.verdicts}


def test_escape_codes_in_a_gpu_name_never_reach_the_summary(tree: tuple[int, int]) -> None:
    """A GPU name is whatever the driver (or a hostile shim) says; the run summary is
    printed to a terminal."""
    from devcheck.run.report import render_text

    child, _ = tree
    sc = fk.one_gpu(name="NVIDIA \x1b[2J\x1b]0;pwned\x07\x9b31mGeForce\nX",
                    processes=[fk.FakeProcess(child, GiB)])
    sampler, samples = sample_for(sc, child)
    text = render_text(summarize(["x"], 0, stats_of(sampler, samples), None))
    assert "\\x1b[2J" in text
    assert not any(c in text for c in ("\x1b", "\x07", "\x9b"))


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, ImportError])
def test_a_binding_that_raises_anything_on_import_is_an_event(exc: type[BaseException]) -> None:
    from devcheck.probe.nvml_sample import NvmlSampler

    def boom() -> Any:
        raise exc("from the binding")

    nv = NvmlSampler(import_pynvml=boom)
    events = nv.open()
    assert not nv.available
    assert events[0].kind == "nvml_unavailable"
    assert "could not be imported" in events[0].message and exc.__name__ in events[0].message
