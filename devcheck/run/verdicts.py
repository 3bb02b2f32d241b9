"""Verdicts: what a run's statistics say about how the job used its devices. Pure.

Each rule reads :class:`~devcheck.run.stats.JobStats` and returns at most one
:class:`Verdict`, which names the evidence, the fix, the NVML field it rests on and what
that field does *not* mean: ``utilization.gpu`` counts the share of time any kernel ran
(a one-thread kernel reads 100%), not how much of the GPU the kernels used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from devcheck.facts import Severity, ToDict
from devcheck.run.stats import GpuStats, JobStats

GiB = 1024**3
MIN_JOB_SAMPLES = 4  # fewer ticks on a GPU than this: too short to judge its use
SHARE = 0.3  # a condition seen in >= 30% of the job's ticks is a pattern, not noise
NEAR_OOM = 0.95
SLOWDOWNS = ("hw_slowdown", "sw_thermal", "hw_thermal", "hw_power_brake", "sw_power_cap")

UTIL_CAVEAT = ("utilization.gpu is the share of the sample window in which any kernel ran; "
               "a one-thread kernel reads 100%: it is not SM occupancy or FLOP efficiency")


@dataclass(frozen=True)
class Verdict(ToDict):
    id: str  # stable: input_bound, launch_bound, near_oom, throttled, gpu_competing,
    #          cpu_only, gpu_use_unknown, no_gpu, gpu_lost, gpu_well_used, too_short,
    #          cpu_contended
    severity: Severity
    title: str
    evidence: str
    fix: str | None
    field: str | None  # the NVML field / source this rests on
    caveat: str | None  # what that field does not mean
    gpu: int | None = None  # NVML index
    pitfall: str | None = None


def gib(n: int | None) -> str:
    return "?" if n is None else f"{n / GiB:.1f}"


def size(n: int | None) -> str:
    """Bytes for a person: "7.6 GiB", "310 MiB"."""
    if n is None:
        return "?"
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / 1024**2:.0f} MiB"


def gpu_label(g: GpuStats) -> str:
    """"GPU 2 (cuda:0)" when the numbering differs, "GPU 0" when it is the same."""
    if g.torch_index is None or g.torch_index == g.index:
        return f"GPU {g.index}"
    return f"GPU {g.index} (cuda:{g.torch_index})"


def used_gpus(stats: JobStats) -> list[GpuStats]:
    """The GPUs on which a process of the job held a CUDA context at least once."""
    return [g for g in stats.gpus if g.job_samples > 0]


def _no_gpu(stats: JobStats) -> Verdict | None:
    if stats.gpus or not stats.samples:
        return None
    why = stats.nvml_error or "NVML lists no GPU"
    return Verdict("no_gpu", "info", "no NVIDIA GPU here: the job ran on the CPU",
                   f"NVML: {why}", "nothing to do on this machine; on a GPU machine "
                   "`devcheck doctor` checks that torch can use it",
                   "nvmlInit / nvmlDeviceGetCount",
                   "NVML sees NVIDIA GPUs only; Apple (mps) and AMD devices are not sampled")


def _cpu_only(stats: JobStats) -> Verdict | None:
    if not stats.gpus or used_gpus(stats):
        return None
    listed = [g for g in stats.gpus if g.processes_listed]
    if not listed:
        return Verdict("gpu_use_unknown", "warn", "could not tell whether the job used a GPU",
                       "NVML did not list the processes on any GPU (not supported here, or "
                       "a container hides host pids)", "check inside the job: "
                       "`print(next(model.parameters()).device)`",
                       "nvmlDeviceGetComputeRunningProcesses", None)
    foreign = [g for g in listed if g.unknown_pid_share >= SHARE]
    if foreign:
        busy = ", ".join(f"{gpu_label(g)} {g.util_mean_pct:.0f}% kernel-active"
                         for g in foreign if g.util_mean_pct is not None)
        return Verdict("gpu_use_unknown", "warn", "could not tell whether the job used a GPU",
                       "NVML lists GPU processes by pids that do not exist here (a container "
                       "sees the host's pids), so none can be matched to the job"
                       + (f"; during the run: {busy}" if busy else ""),
                       "run devcheck in the host's PID namespace (docker --pid=host) to "
                       "attribute GPU use, or check inside the job: "
                       "`print(next(model.parameters()).device)`",
                       "nvmlDeviceGetComputeRunningProcesses", "pids are the host's, not "
                       "this container's")
    hidden = [g for g in stats.gpus if g.torch_index is None]
    evidence = (f"{len(listed)} GPU(s) sampled {stats.samples} times; no process of the "
                "job ever appeared in their compute-process lists")
    if hidden and len(hidden) == len(stats.gpus):
        evidence += "; CUDA_VISIBLE_DEVICES hid every GPU from the job"
    return Verdict("cpu_only", "warn",
                   "the job never created a CUDA context: it ran on the CPU", evidence,
                   "create the model and the batches on the GPU: device = torch.device('cuda'); "
                   "model.to(device); X, y = X.to(device), y.to(device); `devcheck doctor` "
                   "says whether torch can use the GPU at all",
                   "nvmlDeviceGetComputeRunningProcesses",
                   "a process appears there only once it has a CUDA context; a job that "
                   "checked torch.cuda.is_available() alone creates none",
                   pitfall="cuda_available_but_unused")


def _input_bound(g: GpuStats) -> Verdict | None:
    if g.job_samples < MIN_JOB_SAMPLES or g.input_bound_share < SHARE:
        return None
    return Verdict(
        "input_bound", "warn", f"{gpu_label(g)}: input-bound: the GPU waited for data",
        f"in {g.input_bound_share:.0%} of the job's samples utilization.gpu was < 50% while "
        f"the job's other processes (DataLoader workers) were busy or every allowed core was "
        f"full; mean utilization.gpu {g.util_mean_pct}%",
        "keep the dataset on the GPU when it fits (softmax --loader tensor), move decoding/"
        "augmentation to the GPU, pre-process once, or add num_workers if cores are free; "
        "pin_memory=True + non_blocking=True overlap the copies",
        "utilization.gpu + the tree's CPU %", UTIL_CAVEAT, gpu=g.index)


def _launch_bound(g: GpuStats) -> Verdict | None:
    if g.job_samples < MIN_JOB_SAMPLES:
        return None
    idle = g.host_bound_share >= SHARE
    # "busy" by utilization.gpu, yet barely touching memory and drawing little power: many
    # tiny kernels. A big GEMM also reads little memory per FLOP, but it draws near the
    # power limit, so low power (or a low SM share) is required as the second witness.
    power = g.power_mean_w / g.power_limit_w if g.power_mean_w and g.power_limit_w else None
    light = (power is not None and power < 0.4) or (
        g.job_sm_util_mean_pct is not None and g.job_sm_util_mean_pct <= 30)
    busy_but_light = (g.util_mean_pct or 0) >= 60 and g.util_memory_mean_pct is not None \
        and g.util_memory_mean_pct <= 5 and light
    if not (idle or busy_but_light):
        return None
    if idle:
        evidence = (f"in {g.host_bound_share:.0%} of the job's samples utilization.gpu was "
                    f"< 50% while the process driving the GPU used a full CPU core and no "
                    f"other process of the job was busy")
    else:
        evidence = (f"utilization.gpu {g.util_mean_pct}% but utilization.memory "
                    f"{g.util_memory_mean_pct}%"
                    + (f", power {power:.0%} of the limit" if power is not None else "")
                    + (f", the job's SM share {g.job_sm_util_mean_pct}%"
                       if g.job_sm_util_mean_pct is not None else "")
                    + ": many tiny kernels keep it 'busy' without work")
    return Verdict(
        "launch_bound", "warn", f"{gpu_label(g)}: sync/launch-bound: the Python side is the "
        "bottleneck", evidence,
        "remove per-step host syncs (.item(), float(loss), print of tensors, .cpu()): "
        "accumulate on the device and read once per epoch; use bigger batches; "
        "torch.compile or CUDA graphs fuse small kernels; with num_workers=0 the loading "
        "itself runs here: add workers",
        "utilization.gpu, utilization.memory, per-process CPU %", UTIL_CAVEAT,
        gpu=g.index, pitfall="hidden_host_sync")


def _near_oom(g: GpuStats) -> Verdict | None:
    if not g.job_samples or not g.memory_total_bytes or g.memory_peak_bytes is None:
        return None
    share = g.memory_peak_bytes / g.memory_total_bytes
    if share < NEAR_OOM:
        return None
    return Verdict(
        "near_oom", "warn", f"{gpu_label(g)}: memory nearly full ({share:.0%} at peak)",
        f"memory.used peaked at {gib(g.memory_peak_bytes)} / {gib(g.memory_total_bytes)} GiB "
        f"(the job's processes: {gib(g.job_memory_peak_bytes)} GiB)",
        "a larger batch or model will run out of memory: reduce the batch, use mixed "
        "precision or activation checkpointing; torch.cuda.max_memory_allocated() shows "
        "what the tensors themselves needed",
        "memory.used (nvmlDeviceGetMemoryInfo)",
        "memory.used includes the CUDA context (~0.3-1 GiB) and torch's caching allocator, "
        "which keeps freed blocks: it is not the size of live tensors", gpu=g.index)


def _throttled(g: GpuStats) -> Verdict | None:
    if g.job_samples < MIN_JOB_SAMPLES:
        return None
    seen = {r: s for r, s in g.throttle_share.items() if r in SLOWDOWNS and s >= SHARE}
    if not seen:
        return None
    reasons = ", ".join(f"{r} {s:.0%}" for r, s in seen.items())
    extra = []
    if g.temperature_max_c is not None:
        extra.append(f"max temperature {g.temperature_max_c} C")
    if g.power_mean_w is not None and g.power_limit_w:
        extra.append(f"mean power {g.power_mean_w:.0f} / {g.power_limit_w:.0f} W")
    if g.sm_clock_min_mhz is not None:
        extra.append(f"SM clock {g.sm_clock_min_mhz}-{g.sm_clock_max_mhz} MHz")
    only_power = set(seen) == {"sw_power_cap"}
    return Verdict(
        "throttled", "info" if only_power else "warn",
        f"{gpu_label(g)}: clocks slowed down ({'power cap' if only_power else 'throttled'})",
        f"clock event reasons in the job's samples: {reasons}"
        + (f"; {', '.join(extra)}" if extra else ""),
        "sw_power_cap under full load is the GPU working at its power limit (normal); "
        "thermal or hw_slowdown reasons mean cooling or power delivery: check airflow, "
        "fans and `nvidia-smi -q -d PERFORMANCE`",
        "clocks event reasons (nvmlDeviceGetCurrentClocksEventReasons)",
        "a reason being set says why clocks are below the maximum, not how much speed was "
        "lost", gpu=g.index)


def _competing(g: GpuStats) -> Verdict | None:
    if not g.job_samples:
        return None
    rivals = [o for o in g.others if o.seen_share >= SHARE or (o.sm_util_peak_pct or 0) > 10]
    if not rivals:
        return None
    listed = ", ".join(f"pid {o.pid} ({gib(o.memory_peak_bytes)} GiB"
                       + (f", SM {o.sm_util_peak_pct}%" if o.sm_util_peak_pct is not None
                          else "") + ")" for o in rivals[:5])
    return Verdict(
        "gpu_competing", "warn", f"{gpu_label(g)}: other processes share this GPU",
        f"processes outside the job held a context while it ran: {listed}",
        "the job gets a share of the GPU's time and memory: run it on a free GPU "
        "(CUDA_VISIBLE_DEVICES=N) or stop the others (`devcheck gpus` lists them)",
        "nvmlDeviceGetComputeRunningProcesses / nvmlDeviceGetProcessUtilization",
        "a listed process may be idle; its SM share (where shown) says how busy it was",
        gpu=g.index)


def _lost(g: GpuStats) -> Verdict | None:
    if g.lost_at_s is None:
        return None
    return Verdict(
        "gpu_lost", "error", f"GPU {g.index} stopped answering at {g.lost_at_s:.1f} s",
        "NVML reported the GPU as lost (fallen off the bus, Xid error, reset needed)",
        "check `dmesg | grep -i xid` and `nvidia-smi`; the GPU usually needs a reset "
        "(nvidia-smi -r) or a reboot", "any NVML call (NVMLError_GpuIsLost)", None,
        gpu=g.index)


def _cpu_contended(stats: JobStats) -> Verdict | None:
    h = stats.host
    if stats.samples < MIN_JOB_SAMPLES or h.contended_share < SHARE:
        return None
    machine = ""
    if h.machine_cpu_pct_mean is not None and h.machine_cores:
        machine = (f"; the whole machine used {h.machine_cpu_pct_mean / 100:.2f} of its "
                   f"{h.machine_cores} cores, the job {(h.cpu_pct_mean or 0) / 100:.2f}")
    return Verdict(
        "cpu_contended", "warn", "the job waited for a CPU: other processes took it",
        f"in {h.contended_share:.0%} of the samples a main thread of the job spent >= 50% "
        f"of the time ready to run but waiting for a CPU (on average the most-waiting one "
        f"waited {h.cpu_wait_pct_mean:.0f}% of the time)"
        + machine,
        "run when the machine is quieter, give the job its own cores (taskset -c / a "
        "cpuset), lower the others' priority (renice), or use fewer DataLoader workers "
        "than cores; `top` shows who takes the CPU",
        "run-queue wait in /proc/<pid>/schedstat (main thread of each process)",
        "it counts only the main thread of each process (the Python loop, each worker's "
        "loader); a container's CPU quota throttles without showing up as run-queue wait")


def _well_used(stats: JobStats, found: list[Verdict]) -> Verdict | None:
    flagged = {v.gpu for v in found if v.severity in ("warn", "error")}
    for g in used_gpus(stats):
        if g.index in flagged or g.job_samples < MIN_JOB_SAMPLES:
            continue
        if (g.util_mean_pct or 0) >= 80:
            return Verdict("gpu_well_used", "ok", f"{gpu_label(g)}: kept busy",
                           f"utilization.gpu {g.util_mean_pct}% on average over "
                           f"{g.job_samples} samples", None, "utilization.gpu",
                           UTIL_CAVEAT, gpu=g.index)
    return None


GPU_RULES: tuple[Callable[[GpuStats], Verdict | None], ...] = (
    _lost, _near_oom, _input_bound, _launch_bound, _throttled, _competing)


def verdicts(stats: JobStats) -> list[Verdict]:
    """Every verdict the statistics support, most severe first."""
    found = [v for v in (_no_gpu(stats), _cpu_only(stats), _cpu_contended(stats))
             if v is not None]
    for g in stats.gpus:
        found += [v for rule in GPU_RULES if (v := rule(g)) is not None]
    for g in used_gpus(stats):
        if g.job_samples < MIN_JOB_SAMPLES:
            found.append(Verdict(
                "too_short", "info", f"{gpu_label(g)}: too few samples to judge its use",
                f"the job held a context for {g.job_samples} sample(s)", "sample faster "
                "(--interval 0.1) or run longer", None, None, gpu=g.index))
    well = _well_used(stats, found)
    if well is not None:
        found.append(well)
    order = ("error", "warn", "info", "ok")
    return sorted(found, key=lambda v: order.index(v.severity))
