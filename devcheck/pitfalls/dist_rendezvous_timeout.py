"""A rank (or a whole node) never joins the rendezvous: the others wait, then time out."""

from __future__ import annotations

from devcheck.pitfalls._base import Fix, Pitfall, Symptom

STORE_TIMEOUT_S = 3  # the demo waits seconds, not torch's default 10-30 minutes


def _all_reduce_rank(rank: int, world: int) -> float:
    import torch
    import torch.distributed as dist

    x = torch.tensor([float(rank + 1)])
    dist.all_reduce(x)
    return float(x.item())


def reproduce(device: str) -> None:
    from devcheck.dist.spawn import run_ranks

    # world_size=2, but the second node never starts (wrong MASTER_ADDR, crashed job,
    # --nnodes larger than the nodes launched): rank 0 waits at the store, then times out.
    outcomes = run_ranks(_all_reduce_rank, 2, start=[0], timeout_s=30,
                         store_timeout_s=STORE_TIMEOUT_S)
    bad = outcomes[0]
    if not bad.ok:
        raise RuntimeError(f"rank 0: {bad.error_text}")


def fixed(device: str) -> str:
    from devcheck.dist.spawn import run_ranks

    outcomes = run_ranks(_all_reduce_rank, 2, timeout_s=60, store_timeout_s=20)
    for o in outcomes:
        if not o.ok:
            raise RuntimeError(f"rank {o.rank}: {o.error_text}")
    return f"both ranks joined; all_reduce gave {outcomes[0].value:g} on every rank (1+2)"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="dist_rendezvous_timeout",
    title="Rendezvous never completes: a rank or node did not join (wrong address, "
    "--nnodes, firewall)",
    needs=("cpu",),  # gloo on the CPU, whatever GPUs the machine has
    symptoms=(
        Symptom(r"Timed out after \d+ seconds waiting for clients\. \d+/\d+ clients joined",
                "waiting for clients", "torch.distributed.DistStoreError: Timed out after 3 "
                "seconds waiting for clients. 1/2 clients joined."),
        Symptom(r"RendezvousTimeoutError", "rendezvoustimeouterror",
                "torch.distributed.elastic.rendezvous.api.RendezvousTimeoutError",
                variant="torchrun (elastic c10d rendezvous)"),
        Symptom(r"Timed out initializing process group in store based barrier on rank:? \d+",
                "store based barrier", "RuntimeError: Timed out initializing process group "
                "in store based barrier on rank: 0, for key: store_based_barrier_key:1 "
                "(world_size=2, worker_count=1, timeout=0:30:00)", variant="torch < 2.0"),
        Symptom(r"client socket has timed out after \d+m?s while trying to connect to",
                "client socket has timed out", "torch.distributed.DistNetworkError: The "
                "client socket has timed out after 1800000ms while trying to connect to "
                "(10.0.0.1, 29500).", variant="a worker cannot reach MASTER_ADDR"),
        Symptom(r"the rendezvous at \S+ \(id \S+\) did not complete", "did not complete",
                "the rendezvous at 127.0.0.1:29400 (id devcheck-dist) did not complete within "
                "60 s: it needs 2 nodes", variant="devcheck dist", weight=0.8),
    ),
    mechanism=(
        "init_process_group (and torchrun's rendezvous) first meet at a key-value store on "
        "MASTER_ADDR:MASTER_PORT (or --rdzv-endpoint): the store waits until WORLD_SIZE "
        "ranks have joined. A rank that never starts, a node launched with another "
        "--nnodes/--rdzv-id, an address the other nodes cannot reach (127.0.0.1, a "
        "firewalled port, the wrong interface) leaves the others waiting for the full "
        "timeout (10-30 minutes by default), then every waiting rank fails."
    ),
    source="torch/csrc/distributed/c10d/TCPStore.cpp (waitForWorkers) via "
    "torch/distributed/rendezvous.py _create_c10d_store; "
    "torch/distributed/elastic/rendezvous/dynamic_rendezvous.py",
    fixes=(
        Fix("Start every node with the same rendezvous settings",
            "torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \\\n"
            "    --rdzv-endpoint HOST0:29400 --rdzv-id job42 train.py   # on each node"),
        Fix("Use an address and port every node can reach",
            "nc -zv HOST0 29400          # from each node; open the port in the firewall\n"
            "export GLOO_SOCKET_IFNAME=eth0 NCCL_SOCKET_IFNAME=eth0"),
        Fix("Fail fast while debugging, and see who is missing",
            "dist.init_process_group(backend, timeout=timedelta(seconds=60))\n"
            "devcheck dist --nnodes 2 --rdzv-endpoint HOST0:29400 --timeout 60"),
    ),
    frames=("torch/distributed/rendezvous.py", "torch/distributed/elastic/rendezvous/"),
    hints=("MASTER_ADDR", "MASTER_PORT", "torchrun", "nnodes", "rendezvous"),
    cpu_note="reproduced with gloo: rank 0 of 2 starts alone and its store times out in 3 s",
)
