"""The records ``devcheck dist`` gathers: topology, the launch, collectives, bandwidth, hangs.

Frozen dataclasses with units in field names, ``None`` for "not measured here", and
``to_dict()`` for the JSON renderer: the field names are the JSON schema documented in
docs/dist.md (add, never rename). Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from devcheck.facts import Finding, ToDict

SCHEMA_VERSION = 1
STAGES = ("launch", "rendezvous", "gloo", "nccl")


@dataclass(frozen=True)
class GpuLink(ToDict):
    """How two GPUs reach each other, as NVML tells it (``nvidia-smi topo -m``)."""

    gpu_a: int
    gpu_b: int
    common_ancestor: str | None = None  # INTERNAL, SINGLE, MULTIPLE, HOSTBRIDGE, NODE, SYSTEM
    p2p_read: str | None = None  # "ok", "chipset not supported", "disabled by regkey", ...
    nvlinks: int = 0  # active NVLinks between the two (0: none)
    expected_busbw_gbps: float | None = None  # what this link should give, per direction


@dataclass(frozen=True)
class TopologyFacts(ToDict):
    """Everything the preflight reads without launching anything."""

    gpu_count: int = 0
    gpu_names: tuple[str, ...] = ()
    links: tuple[GpuLink, ...] = ()
    nvlink_version: int | None = None
    pcie_gen: int | None = None
    pcie_width: int | None = None
    nccl_version: str | None = None  # "2.27.3", from the libnccl torch will load
    nccl_error: str | None = None  # why the version is unknown
    shm_total_bytes: int | None = None
    kernel_cmdline: str | None = None
    iommu_groups: int | None = None  # /sys/kernel/iommu_groups entries: >0 means IOMMU on
    env: dict[str, str] = field(default_factory=dict)  # NCCL_*, MASTER_*, CUDA_VISIBLE_*...
    nvml_error: str | None = None  # why there is no GPU topology
    net_interfaces: tuple[str, ...] = ()  # for NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME
    cpu_usable: int | None = None  # CPUs this process may run on (gloo ranks share them)


@dataclass(frozen=True)
class CollectiveCheck(ToDict):
    """One correctness check: a collective with rank-dependent values, and the damage."""

    backend: str
    op: str  # all_reduce, all_gather, broadcast
    elements: int
    wrong: int  # elements differing from the exact expected value, summed over ranks
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class BandwidthPoint(ToDict):
    """One size of the sweep, nccl-tests style: time is the slowest rank's mean."""

    backend: str
    op: str
    size_bytes: int
    time_us: float
    algbw_gbps: float  # size / time, in GB/s (10^9 bytes)
    busbw_gbps: float  # algbw x the op's bus factor (all_reduce 2(n-1)/n, all_gather (n-1)/n)


@dataclass(frozen=True)
class RankState(ToDict):
    """Where one rank got to, from its progress file."""

    rank: int
    started: bool
    last_event: str | None = None  # "enter all_reduce #3", "exit barrier #1", "done"
    last_op: str | None = None
    last_seq: int | None = None
    stage: str | None = None  # the stage it was in (rendezvous, gloo, nccl)
    finished: bool = False
    error: str | None = None
    host: str | None = None
    pid: int | None = None


@dataclass(frozen=True)
class HangReport(ToDict):
    """Who did not arrive where, and what to run next."""

    stage: str
    missing_ranks: tuple[int, ...]
    summary: str
    last_collective: str | None = None
    next_steps: tuple[str, ...] = ()


@dataclass(frozen=True)
class LaunchResult(ToDict):
    """The launch through ``torch.distributed.run``, as the parent saw it."""

    command: tuple[str, ...]
    world_size: int
    local_ranks: int
    backends: tuple[str, ...]
    exit_code: int | None  # None: killed on timeout
    timed_out: bool
    duration_s: float
    stages_passed: tuple[str, ...] = ()
    checks: tuple[CollectiveCheck, ...] = ()
    bandwidth: tuple[BandwidthPoint, ...] = ()
    barrier_latency_us: dict[str, float] = field(default_factory=dict)  # backend -> us
    ranks: tuple[RankState, ...] = ()
    hang: HangReport | None = None
    launcher_output: str = ""  # tail of torchrun's own output
    nccl_version: str | None = None  # as torch reports it inside the ranks
    device_names: tuple[str, ...] = ()
    timeout_s: float | None = None  # the --timeout it ran under


@dataclass(frozen=True)
class DistReport(ToDict):
    """The whole answer: preflight facts, the launch (when run), findings, the exit code."""

    topology: TopologyFacts
    launch: LaunchResult | None
    findings: tuple[Finding, ...]
    exit_code: int
    schema_version: int = SCHEMA_VERSION
