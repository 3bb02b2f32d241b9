"""Verdict rules and the CUDA_VISIBLE_DEVICES mapping, on hand-built timelines (pure)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from devcheck.probe.nvml_sample import GpuStatic, decode_throttle
from devcheck.probe.procs import ProcReading
from devcheck.run.devices import visible_map
from devcheck.run.report import build_crash, render_text, summarize
from devcheck.run.stats import Accumulator, JobStats
from devcheck.run.timeline import GpuProc, GpuSample, Sample
from devcheck.run.verdicts import verdicts

GiB = 1024**3
MAIN, WORKER, RIVAL = 100, 101, 999


def tick(t: float, *, util: int, main_cpu: float, worker_cpu: float | None = None,
         mem: int = 2 * GiB, total: int = 8 * GiB, mem_util: int = 30,
         throttle: tuple[str, ...] = (), rival: bool = False, on_gpu: bool = True) -> Sample:
    procs = [ProcReading(MAIN, 1, "python", main_cpu, GiB, 8)]
    if worker_cpu is not None:
        procs.append(ProcReading(WORKER, MAIN, "python", worker_cpu, GiB, 1))
    gp = [GpuProc(MAIN, True, mem)] if on_gpu else []
    if rival:
        gp.append(GpuProc(RIVAL, False, 3 * GiB, sm_util_pct=40))
    g = GpuSample(index=0, torch_index=0, util_gpu_pct=util, util_memory_pct=mem_util,
                  memory_used_bytes=mem + (3 * GiB if rival else 0), memory_total_bytes=total,
                  throttle=throttle, processes=tuple(gp),
                  job_memory_bytes=mem if on_gpu else None)
    total_cpu = main_cpu + (worker_cpu or 0.0)
    return Sample(t_s=t, time_unix=t, gpus=(g,), procs=tuple(procs), cpu_pct_total=total_cpu,
                  rss_bytes_total=2 * GiB, threads_total=9)


def stats(ticks: list[Sample], cores: int = 8) -> JobStats:
    acc = Accumulator(interval_s=0.25, allowed_cores=cores, nvml_available=True)
    for s in ticks:
        acc.add(s)
    return acc.freeze()


def ids(st: JobStats) -> list[str]:
    return [v.id for v in verdicts(st)]


def test_dataloader_workers_busy_gpu_idle_is_input_bound() -> None:
    st = stats([tick(i * 0.25, util=15, main_cpu=40, worker_cpu=350) for i in range(20)])
    found = verdicts(st)
    assert found[0].id == "input_bound"
    assert "utilization.gpu" in (found[0].field or "")
    assert "not SM occupancy" in (found[0].caveat or "")
    assert "launch_bound" not in ids(st)


def test_all_cores_full_is_input_bound_too() -> None:
    st = stats([tick(i, util=30, main_cpu=60, worker_cpu=150) for i in range(10)], cores=2)
    assert "input_bound" in ids(st)


def test_one_saturated_driver_process_is_launch_bound_not_input_bound() -> None:
    """--loader tensor: data already on the GPU, Python launching tiny kernels."""
    st = stats([tick(i, util=35, main_cpu=99, worker_cpu=None) for i in range(20)])
    assert "launch_bound" in ids(st) and "input_bound" not in ids(st)


def test_busy_gpu_without_memory_traffic_or_power_is_launch_bound() -> None:
    light = [replace(t, gpus=(replace(t.gpus[0], power_w=60.0),))
             for t in (tick(i, util=97, main_cpu=100, mem_util=1) for i in range(20))]
    acc = Accumulator(interval_s=0.25, allowed_cores=8, nvml_available=True,
                      gpus=(GpuStatic(0, "H100", "GPU-a", 80 * GiB, 700.0),))
    for s in light:
        acc.add(s)
    found = {v.id: v for v in verdicts(acc.freeze())}
    assert "launch_bound" in found and "power 9% of the limit" in found["launch_bound"].evidence


def test_big_gemms_near_the_power_limit_are_not_launch_bound() -> None:
    """A compute-bound GEMM reads little memory per FLOP too, but draws full power."""
    heavy = [replace(t, gpus=(replace(t.gpus[0], power_w=650.0),))
             for t in (tick(i, util=99, main_cpu=100, mem_util=2) for i in range(20))]
    acc = Accumulator(interval_s=0.25, allowed_cores=8, nvml_available=True,
                      gpus=(GpuStatic(0, "H100", "GPU-a", 80 * GiB, 700.0),))
    for s in heavy:
        acc.add(s)
    assert ids(acc.freeze()) == ["gpu_well_used"]


def test_well_used_gpu() -> None:
    st = stats([tick(i, util=95, main_cpu=100, mem_util=60) for i in range(20)])
    assert ids(st) == ["gpu_well_used"]


def test_near_oom_and_competitor() -> None:
    st = stats([tick(i, util=90, main_cpu=100, mem=int(4.9 * GiB), rival=True)
                for i in range(10)])
    found = {v.id: v for v in verdicts(st)}
    assert "near_oom" in found and "gpu_competing" in found
    assert f"pid {RIVAL} (3.0 GiB, SM 40%)" in found["gpu_competing"].evidence
    assert "caching allocator" in (found["near_oom"].caveat or "")


def test_power_cap_alone_is_info_thermal_is_warn() -> None:
    power = verdicts(stats([tick(i, util=99, main_cpu=100, mem_util=50,
                                 throttle=("sw_power_cap",)) for i in range(10)]))
    thermal = verdicts(stats([tick(i, util=99, main_cpu=100, mem_util=50,
                                   throttle=("hw_thermal",)) for i in range(10)]))
    assert [v.severity for v in power if v.id == "throttled"] == ["info"]
    assert [v.severity for v in thermal if v.id == "throttled"] == ["warn"]


def test_gpu_idle_reason_is_not_throttling() -> None:
    st = stats([tick(i, util=99, main_cpu=100, mem_util=50, throttle=("gpu_idle",))
                for i in range(10)])
    assert "throttled" not in ids(st)


def test_too_short_to_judge() -> None:
    st = stats([tick(0, util=10, main_cpu=100)])
    assert ids(st) == ["too_short"]


def test_job_never_on_gpu() -> None:
    st = stats([tick(i, util=0, main_cpu=100, on_gpu=False) for i in range(5)])
    assert ids(st) == ["cpu_only"]
    text = render_text(summarize(["python", "train.py"], 0, st, None))
    assert "the job never created a CUDA context: it ran on the CPU" in text


def test_summary_json_round_trips() -> None:
    st = stats([tick(i, util=15, main_cpu=40, worker_cpu=350) for i in range(8)])
    doc = json.loads(summarize(["a"], 0, st, "/tmp/x").to_json())
    assert doc["v"] == 1 and doc["verdicts"][0]["id"] == "input_bound"
    assert doc["stats"]["gpus"][0]["input_bound_share"] == 1.0


def test_crash_sigkill_without_oom_text_mentions_the_oom_killer() -> None:
    crash = build_crash(137, "", stats([tick(0, util=0, main_cpu=1)]))
    assert crash is not None and crash.signal == "SIGKILL"
    assert "OOM killer" in crash.machine_facts[0]


def test_clean_exit_has_no_crash() -> None:
    assert build_crash(0, "Traceback ... CUDA out of memory", stats([])) is None


@pytest.mark.parametrize("setting, expected", [
    (None, {0: 0, 1: 1, 2: 2}),
    ("", {}),
    ("2", {2: 0}),
    ("2,0", {2: 0, 0: 1}),
    ("GPU-c", {2: 0}),
    ("GPU-", {}),  # ambiguous prefix: CUDA rejects it
    ("1,1", {1: 0}),  # duplicate ends the list
    ("0,9,1", {0: 0}),  # invalid entry ends the list
    (" 1 , 0 ", {1: 0, 0: 1}),
    ("MIG-abc", {}),
])
def test_visible_map(setting: str | None, expected: dict[int, int]) -> None:
    vm = visible_map(setting, ["GPU-aaaa", "GPU-bbbb", "GPU-cccc"], "PCI_BUS_ID")
    assert vm.torch_index == expected


def test_device_order_note() -> None:
    assert visible_map(None, ["GPU-a", "GPU-b"]).note is not None
    assert visible_map(None, ["GPU-a", "GPU-b"], "PCI_BUS_ID").note is None
    assert visible_map(None, ["GPU-a"]).note is None


def test_decode_throttle() -> None:
    assert decode_throttle(0) == ()
    assert decode_throttle(0x1 | 0x8) == ("gpu_idle", "hw_slowdown")


def test_run_queue_wait_is_cpu_contention() -> None:
    def run(wait: float) -> list[str]:
        acc = Accumulator(interval_s=0.25, allowed_cores=2, machine_cores=2)
        for i in range(10):
            s = tick(i, util=0, main_cpu=40, worker_cpu=10, on_gpu=False)
            procs = (replace(s.procs[0], cpu_wait_pct=wait), replace(s.procs[1], cpu_wait_pct=1))
            acc.add(replace(s, gpus=(), procs=procs, machine_cpu_pct=199.0,
                            cpu_wait_pct_total=wait + 1))
        found = {v.id: v for v in verdicts(acc.freeze())}
        if "cpu_contended" in found:
            assert "waited 80% of the time" in found["cpu_contended"].evidence
            assert "1.99 of its 2 cores" in found["cpu_contended"].evidence
        return list(found)

    assert "cpu_contended" in run(80.0)
    assert "cpu_contended" not in run(10.0)  # a busy machine, but the job did not wait


def test_stats_are_finite_and_json_ready() -> None:
    st = stats([tick(i, util=50, main_cpu=100) for i in range(3)])
    for v in json.loads(json.dumps(st.to_dict()))["gpus"][0].values():
        if isinstance(v, float):
            assert math.isfinite(v)


def test_plot_series_halves_its_resolution_and_stays_aligned() -> None:
    from devcheck.run.plot import Series

    series = Series(max_points=10)
    for i in range(1000):
        s = tick(i * 0.25, util=i % 100, main_cpu=50)
        if i >= 500:  # a GPU appearing mid-run (hot-plug, or the first samples failing)
            s = replace(s, gpus=s.gpus + (replace(s.gpus[0], index=1),))
        series.add(s)
    assert 10 <= len(series.t) < 20
    assert series.t == sorted(series.t) and series.t[-1] > 200
    for per_gpu in (series.util, series.mem_gib, series.job_mem_gib):
        assert set(per_gpu) == {0, 1}
        assert all(len(v) == len(series.t) for v in per_gpu.values())
    assert series.util[1][0] is None  # before it appeared
