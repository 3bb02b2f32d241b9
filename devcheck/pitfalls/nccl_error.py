"""NCCL errors and collective timeouts: one rank stuck, gone, or unreachable.

The reproduction is real ``torch.distributed``: two processes join a process group and
rank 1 stays out of an all-reduce (as a rank stuck in data loading, or on another code
path, would). On CUDA the backend is NCCL, in two spawned processes (the timeout, or NCCL
refusing two ranks on one GPU when the machine has one); on the CPU it is gloo through
devcheck.dist.spawn, whose collective times out the same way. The error text is the
rank's own, passed back from its process.
"""

from __future__ import annotations

import os
import tempfile
import time

from devcheck.pitfalls._base import Fix, Pitfall, Symptom

_TIMEOUT_S = 3.0


def rank_main(rank: int, world: int, init_file: str, out_dir: str, skip: bool) -> None:
    """One NCCL rank (a spawned process): join, all-reduce once (which creates the NCCL
    communicator), then all-reduce again, which rank 1 skips when ``skip``. What happened
    goes to ``out_dir/rank{N}.txt``; stderr (where NCCL's watchdog writes when it aborts the
    process) to ``out_dir/rank{N}.err``."""
    import datetime

    err = os.open(os.path.join(out_dir, f"rank{rank}.err"), os.O_WRONLY | os.O_CREAT, 0o600)
    os.dup2(err, 2)
    os.environ["TORCH_NCCL_BLOCKING_WAIT"] = "1"  # a timeout raises here, in Python
    import torch
    import torch.distributed as dist

    result = "ok"
    try:
        dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank,
                                world_size=world,
                                timeout=datetime.timedelta(seconds=_TIMEOUT_S))
        dev = torch.device("cuda", rank % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(dev)
        x = torch.ones(4, device=dev)
        dist.all_reduce(x)  # every rank: the communicator exists after this
        torch.cuda.synchronize(dev)
        if skip and rank == 1:  # stays out of the next collective; leaves once 0 reported
            done = os.path.join(out_dir, "rank0.txt")
            deadline = time.monotonic() + 6 * _TIMEOUT_S
            while not os.path.exists(done) and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            dist.all_reduce(x)
            torch.cuda.synchronize(dev)
            result = f"ok: all_reduce gave {x[0].item():.0f} on {dev}"
    except Exception as exc:
        result = f"{type(exc).__name__}: {exc}"
    with open(os.path.join(out_dir, f"rank{rank}.txt"), "w", encoding="utf-8") as f:
        f.write(result)
    os._exit(0)  # skip destroy_process_group: it may wait on the stuck peer


def _run(device: str, skip: bool) -> str:
    """Two NCCL ranks, spawned (this process may have initialised CUDA); rank 0's text, or
    the end of its stderr when NCCL's watchdog aborted it before it could report."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="devcheck-dist-") as tmp:
        init_file = os.path.join(tmp, "init")
        procs = [ctx.Process(target=rank_main, args=(r, 2, init_file, tmp, skip))
                 for r in range(2)]
        for p in procs:
            p.start()
        deadline = time.monotonic() + 90 + 6 * _TIMEOUT_S
        for p in procs:
            p.join(max(0.1, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        path = os.path.join(tmp, "rank0.txt")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                return f.read()
        try:
            with open(os.path.join(tmp, "rank0.err"), encoding="utf-8", errors="replace") as f:
                tail = f.read()[-3000:]
        except OSError:
            tail = ""
        return (f"rank 0 died without a result (exit code {procs[0].exitcode}); its stderr "
                f"ends: {tail.strip() or '(empty)'}")


def gloo_rank(rank: int, world: int, skip: bool) -> str:
    """A CPU rank under devcheck.dist.spawn: all-reduce, or (rank 1 when ``skip``) stay
    alive without joining, as a stuck rank does."""
    import torch
    import torch.distributed as dist

    if skip and rank == 1:
        time.sleep(_TIMEOUT_S + 2)  # alive, never in the collective
        return "stayed out"
    x = torch.ones(4)
    dist.all_reduce(x)
    return f"all_reduce gave {x[0].item():.0f} on cpu"


def _run_cpu(skip: bool) -> str:
    from devcheck.dist.spawn import run_ranks

    outcomes = run_ranks(gloo_rank, 2, timeout_s=60, store_timeout_s=_TIMEOUT_S,
                         args=(skip,))
    first = outcomes[0]
    return f"ok: {first.value}" if first.ok else first.error_text


def reproduce(device: str) -> None:
    text = _run(device, skip=True) if device.startswith("cuda") else _run_cpu(skip=True)
    if text.startswith("ok"):
        return
    raise RuntimeError(f"rank 0 of 2: {text}")


def fixed(device: str) -> str:
    text = _run(device, skip=False) if device.startswith("cuda") else _run_cpu(skip=False)
    if not text.startswith("ok"):
        raise RuntimeError(f"rank 0 of 2: {text}")
    return f"every rank joined the collective: {text[4:]}"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="nccl_error",
    title="NCCL error or collective timeout: a rank stuck, gone, or unable to reach the "
    "others",
    needs=("cuda", "cpu"),
    symptoms=(
        Symptom(r"(?:Watchdog caught|Caught) collective operation timeout: WorkNCCL\(",
                "collective operation timeout",
                "[rank0]:[E321 02:07:08.408271257 ProcessGroupNCCL.cpp:607] [Rank 0] "
                "Watchdog caught collective operation timeout: WorkNCCL(SeqNum=1580, "
                "OpType=ALLREDUCE, NumelIn=466119168, NumelOut=466119168, "
                "Timeout(ms)=600000) ran for 600060 milliseconds before timing out.",
                weight=0.95, variant="NCCL watchdog timeout"),
        Symptom(r"NCCL (?:error|Error \d+)[^\n]{0,200}?unhandled system error",
                "unhandled system error", "RuntimeError: NCCL error in: "
                "../torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp:1275, unhandled system "
                "error (run with NCCL_DEBUG=INFO for details), NCCL version 2.18.1",
                weight=0.95, variant="ncclSystemError (network, /dev/shm, sockets)"),
        Symptom(r"NCCL (?:error|Error \d+)[^\n]{0,200}?(?:unhandled cuda error|invalid usage|"
                r"internal error|remote process exited|invalid argument)",
                "nccl", "torch.distributed.DistBackendError: NCCL error in: "
                "../torch/csrc/distributed/c10d/NCCLUtils.cpp:77, invalid usage (run with "
                "NCCL_DEBUG=WARN for details), NCCL version 2.21.5\nncclInvalidUsage: This "
                "usually reflects invalid usage of NCCL library.\nLast error:\nDuplicate GPU "
                "detected : rank 1 and rank 0 both on CUDA device 1000", weight=0.9,
                variant="other NCCL results"),
        Symptom(r"\bnccl(?:SystemError|InternalError|InvalidUsage|UnhandledCudaError|"
                r"RemoteError)\b",
                "nccl", "ncclSystemError: System call (e.g. socket, malloc) or external "
                "library call failed or device error.", weight=0.9, variant="NCCL result name"),
        Symptom(r"Duplicate GPU detected", "duplicate gpu detected",
                "Duplicate GPU detected : rank 1 and rank 0 both on CUDA device 1000",
                weight=0.9, variant="two ranks on one GPU"),
        Symptom(r"\[[^\]\n]*gloo[^\]\n]*\] Timed out waiting \d+ ?ms for (?:recv|send) "
                r"operation", "timed out waiting",
                "RuntimeError: [../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:81] "
                "Timed out waiting 3000ms for recv operation to complete", weight=0.9,
                variant="gloo collective timeout (CPU)"),
        Symptom(r"NCCL communicator was aborted|ProcessGroupNCCL[^\n]{0,80}Process group "
                r"watchdog thread terminated", "nccl communicator was aborted",
                "RuntimeError: NCCL communicator was aborted on rank 0.", weight=0.85,
                variant="aborted after a timeout"),
    ),
    mechanism=(
        "Collectives (all_reduce, broadcast, barrier; DDP's gradient sync) complete only "
        "when every rank calls them, in the same order, with matching tensors. If one rank "
        "is stuck (slow data loading, a deadlock, an exception swallowed on that rank), "
        "took another code path (rank-dependent `if`, uneven batches), or died, the others "
        "wait until the process-group timeout (10 or 30 minutes by default) and the NCCL "
        "watchdog aborts them: the rank that failed first is the one to look at, not the "
        "ones reporting the timeout. 'unhandled system error' is NCCL failing a system "
        "call: no route between nodes (wrong network interface), a container's small "
        "/dev/shm, or InfiniBand/P2P setup; 'Duplicate GPU detected' is two ranks on one "
        "GPU (torch.cuda.set_device(local_rank) missing)."
    ),
    source="torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp (WorkNCCL::checkTimeout, the "
    "watchdog) and NCCLUtils.hpp (C10D_NCCL_CHECK); gloo's transport for the CPU form",
    fixes=(
        Fix("Find the rank that failed first: rerun with NCCL and torch's debug output",
            "NCCL_DEBUG=INFO TORCH_DISTRIBUTED_DEBUG=DETAIL torchrun --nproc-per-node 2 "
            "train.py\n# the first traceback in the log is the real error"),
        Fix("Make every rank call the same collectives in the same order (no rank-only "
            "branches around them; equal batches per rank)",
            "sampler = DistributedSampler(ds, drop_last=True)\n"
            "if rank == 0: log(...)   # fine: no collective inside\n"
            "dist.barrier()            # every rank, every time"),
        Fix("One GPU per rank", "local_rank = int(os.environ['LOCAL_RANK'])\n"
            "torch.cuda.set_device(local_rank)"),
        Fix("'unhandled system error': name the network interface and give /dev/shm room",
            "NCCL_SOCKET_IFNAME=eth0 NCCL_DEBUG=INFO torchrun ...\n"
            "docker run --ipc=host ...   # or --shm-size=8g"),
        Fix("Slow but healthy steps (e.g. rank 0 evaluating or saving): raise the timeout",
            "dist.init_process_group('nccl', timeout=datetime.timedelta(minutes=60))"),
    ),
    hints=("ProcessGroupNCCL", "NCCL_DEBUG", "torchrun", "all_reduce", "DistributedDataParallel"),
    cpu_note="on the CPU the same missing-rank timeout is shown with gloo (two real "
    "processes); the NCCL texts need CUDA GPUs",
    related=("dist_rendezvous_timeout", "ddp_rank_mismatch"),
)
