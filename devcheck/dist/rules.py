"""Facts in, findings out, for ``devcheck dist``: pure functions, no I/O.

``preflight`` judges what can be read without launching (topology, NCCL, /dev/shm, kernel
command line, variables); ``launch_findings`` judges what the ranks did (stages passed,
wrong elements, bandwidth against the link and ``--min-busbw``, hangs).
"""

from __future__ import annotations

import re

from devcheck.dist.bandwidth import human_size
from devcheck.dist.endpoint import split_endpoint
from devcheck.dist.model import LaunchResult, TopologyFacts
from devcheck.facts import Finding

MiB = 1024**2
SHM_MIN_BYTES = 512 * MiB  # DeepSpeed's report warns below this, and so do we
LINK_FRACTION_WARN = 0.5  # nccl all_reduce busbw under half the link's peak: worth a look
LINK_SIZE_MIN = 16 * MiB  # smaller messages are latency-bound: no verdict on bandwidth


def _ifname_matches(spec: str, interfaces: tuple[str, ...]) -> bool:
    """NCCL_SOCKET_IFNAME syntax: comma list of prefixes, ``=`` exact, ``^`` excludes."""
    parts = [p for p in spec.split(",") if p]
    if spec.startswith("^"):
        excl = [p.lstrip("^=") for p in parts]
        return any(not any(i.startswith(e) for e in excl) for i in interfaces)
    exact = spec.startswith("=")
    names = [p.lstrip("=") for p in parts]
    return any(i == n if exact else i.startswith(n) for i in interfaces for n in names)


def _env_findings(t: TopologyFacts, nproc: int, nnodes: int,
                  backends: tuple[str, ...]) -> list[Finding]:
    env, out = t.env, []
    if env.get("NCCL_P2P_DISABLE", "0") not in ("0", ""):
        out.append(Finding(
            "dist_nccl_p2p_disabled", "warn", "NCCL_P2P_DISABLE is set: GPU-to-GPU traffic "
            "goes through host memory", f"NCCL_P2P_DISABLE={env['NCCL_P2P_DISABLE']}",
            "usually set to dodge a P2P hang whose real cause is ACS/IOMMU on the PCIe "
            "switch: disable ACS (BIOS, or setpci) or boot with iommu=pt, then unset it"))
    for var in ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME"):
        spec = env.get(var)
        if spec is None or not t.net_interfaces:
            continue
        ok = (_ifname_matches(spec, t.net_interfaces) if var.startswith("NCCL")
              else all(p in t.net_interfaces for p in spec.split(",") if p))
        if not ok:
            out.append(Finding(
                f"dist_{var.lower()}_unknown", "error", f"{var}={spec} names no interface "
                "of this machine", f"interfaces here: {', '.join(t.net_interfaces)}",
                f"set {var} to the interface the nodes share (e.g. "
                f"{next((i for i in t.net_interfaces if i != 'lo'), 'eth0')}) or unset it"))
    if "NCCL_DEBUG" in env:
        out.append(Finding(
            "dist_nccl_debug_set", "info", f"NCCL_DEBUG={env['NCCL_DEBUG']} is set",
            "NCCL logs each rank's set-up (and with TRACE each call)",
            "good for diagnosis; unset it for production runs (log volume, slower start)"))
    addr = env.get("MASTER_ADDR")
    if addr is not None:
        local = addr in ("localhost", "::1") or addr.startswith("127.")
        bad = local and nnodes > 1
        out.append(Finding(
            "dist_master_addr", "error" if bad else "info",
            f"MASTER_ADDR={addr} is set in the environment",
            (f"--nnodes {nnodes}: other nodes cannot reach a loopback address" if bad else
             "torchrun's rendezvous sets MASTER_ADDR for its workers; scripts calling "
             "init_process_group(init_method='env://') without torchrun use this one"),
            "use an address every node can reach (hostname -I), or unset it and pass "
            "--rdzv-endpoint" if bad else None))
    out += _visible_devices(t, nproc, backends)
    return out


def _visible_devices(t: TopologyFacts, nproc: int, backends: tuple[str, ...]) -> list[Finding]:
    cvd = t.env.get("CUDA_VISIBLE_DEVICES")
    if cvd is None or "nccl" not in backends:
        return []
    visible = [v.strip() for v in cvd.split(",") if v.strip()]
    mapping = ", ".join(f"rank {r} -> cuda:{r} = GPU {visible[r]}"
                        for r in range(min(nproc, len(visible))))
    if len(visible) < nproc:
        return [Finding(
            "dist_cuda_visible_devices", "error", f"{nproc} ranks per node but "
            f"CUDA_VISIBLE_DEVICES={cvd!r} shows {len(visible)} GPU(s)",
            f"each rank uses cuda:LOCAL_RANK; {mapping or 'no GPU visible'}",
            f"use --nproc {len(visible)} or list {nproc} GPUs in CUDA_VISIBLE_DEVICES")]
    return [Finding("dist_cuda_visible_devices", "info", f"CUDA_VISIBLE_DEVICES={cvd}",
                    mapping, None)]


def _topology_findings(t: TopologyFacts) -> list[Finding]:
    out = []
    for link in t.links:
        pair = f"GPU {link.gpu_a} <-> GPU {link.gpu_b}"
        expect = (f"; expect ~{link.expected_busbw_gbps:.0f} GB/s busbw"
                  if link.expected_busbw_gbps else "")
        if link.p2p_read not in (None, "ok"):
            out.append(Finding(
                "dist_p2p_unavailable", "warn", f"{pair}: no peer-to-peer access "
                f"({link.p2p_read})", f"common ancestor {link.common_ancestor}, "
                f"{link.nvlinks} NVLink(s){expect}",
                "NCCL falls back to copies through host memory; behind a PCIe switch the "
                "usual cause is ACS redirecting P2P to the root complex: disable ACS or boot "
                "with iommu=pt (check with NCCL_DEBUG=INFO: 'via P2P' vs 'via SHM')"))
        elif link.nvlinks == 0 and link.common_ancestor == "SYSTEM":
            out.append(Finding(
                "dist_topology_cross_socket", "warn", f"{pair} talk across CPU sockets "
                "(SYSTEM)", f"no NVLink, common ancestor SYSTEM{expect}",
                "put the ranks of one job on GPUs of the same socket (CUDA_VISIBLE_DEVICES; "
                "nvidia-smi topo -m shows the NUMA affinity)"))
    if t.links:
        best = max(t.links, key=lambda lk: lk.expected_busbw_gbps or 0.0)
        kind = f"{best.nvlinks} NVLink(s)" if best.nvlinks else \
            f"PCIe gen{t.pcie_gen} x{t.pcie_width} ({best.common_ancestor})"
        out.append(Finding(
            "dist_topology", "ok", f"{t.gpu_count} GPUs; best link {kind}",
            "; ".join(f"GPU{lk.gpu_a}-GPU{lk.gpu_b}: {lk.common_ancestor}, "
                      f"{lk.nvlinks} NVLink, P2P {lk.p2p_read}" for lk in t.links[:8]), None))
    return out


def _kernel_findings(t: TopologyFacts) -> list[Finding]:
    cmd = t.kernel_cmdline or ""
    out = []
    iommu_on = re.search(r"\b(intel_iommu|amd_iommu)=on\b", cmd) is not None or \
        (t.iommu_groups or 0) > 0
    passthrough = re.search(r"\biommu=pt\b|\biommu\.passthrough=1\b", cmd) is not None
    if t.gpu_count > 1 and iommu_on and not passthrough:
        out.append(Finding(
            "dist_iommu_translation", "warn", "the IOMMU translates DMA (no iommu=pt) on a "
            "multi-GPU machine", f"{t.iommu_groups} IOMMU groups; kernel command line: "
            f"{cmd[:160] or '(unknown)'}",
            "GPU peer-to-peer through an IOMMU can hang or crawl: boot with iommu=pt "
            "(passthrough), or test with NCCL_P2P_DISABLE=1 to confirm the cause"))
    if "pcie_acs_override" in cmd:
        out.append(Finding(
            "dist_acs_override", "info", "pcie_acs_override is on the kernel command line",
            cmd[:160], "ACS override splits IOMMU groups for VFIO; P2P between GPUs may be "
            "redirected through the root complex"))
    return out


def _endpoint_findings(endpoint: str | None, nnodes: int,
                       error: str | None = None) -> list[Finding]:
    if endpoint is not None and error:
        return [Finding(
            "dist_rdzv_unresolvable", "error", f"--rdzv-endpoint {endpoint}: {error}",
            "torchrun would wait out the whole timeout for a rendezvous host it cannot reach, "
            "and every node would look missing",
            "fix the name, or give node 0's IP address (`hostname -I` on it)")]
    if nnodes <= 1:
        return []
    host, _ = split_endpoint(endpoint or "127.0.0.1:29400")
    if host in ("localhost", "::1") or host.startswith("127."):
        return [Finding(
            "dist_rdzv_loopback", "warn", f"--nnodes {nnodes} with a loopback rendezvous "
            f"endpoint ({endpoint or '127.0.0.1:29400, the default'})",
            "only ranks on this machine can reach a loopback address",
            "pass --rdzv-endpoint HOST:PORT with an address every node can reach "
            "(node 0's, e.g. from `hostname -I`)")]
    return []


def preflight(t: TopologyFacts, *, nproc: int, nnodes: int, backends: tuple[str, ...],
              endpoint: str | None = None, endpoint_error: str | None = None) -> list[Finding]:
    """What can be judged before launching anything (``endpoint_error``: why the endpoint's
    host did not resolve, from :func:`devcheck.dist.endpoint.resolve_error`)."""
    out = _topology_findings(t) + _kernel_findings(t) \
        + _endpoint_findings(endpoint, nnodes, endpoint_error)
    if "nccl" in backends:
        if t.nccl_version:
            out.append(Finding("dist_nccl_version", "ok", f"NCCL {t.nccl_version}",
                               "from ncclGetVersion of the libnccl torch loads", None))
        if t.gpu_count and nproc > t.gpu_count:
            out.append(Finding(
                "dist_nproc_exceeds_gpus", "error", f"--nproc {nproc} but {t.gpu_count} "
                "GPU(s) here", "NCCL needs one GPU per rank ('Duplicate GPU detected')",
                f"use --nproc {t.gpu_count} or fewer"))
        if t.shm_total_bytes is not None and t.shm_total_bytes < SHM_MIN_BYTES:
            out.append(Finding(
                "dist_shm_small", "warn", f"/dev/shm is {t.shm_total_bytes // MiB} MiB "
                "(< 512 MiB)", "NCCL's SHM transport and DataLoader workers allocate there",
                "docker run --shm-size=8g (or --ipc=host); on Kubernetes mount an emptyDir "
                "with medium: Memory at /dev/shm"))
    elif t.gpu_count == 0:
        out.append(Finding("dist_no_gpu", "info", "no NVIDIA GPU: checking gloo (CPU) only",
                           t.nvml_error or "NVML lists no GPU", None))
    if t.cpu_usable is not None and nproc > t.cpu_usable:
        out.append(Finding(
            "dist_cpu_oversubscribed", "info", f"{nproc} ranks share {t.cpu_usable} CPU(s)",
            "ranks wait for each other's time slices: gloo bandwidth and latency figures "
            "measure the scheduler, not the transport", f"use --nproc {t.cpu_usable} or "
            "fewer for meaningful gloo figures"))
    return out + _env_findings(t, nproc, nnodes, backends)


def _bandwidth_findings(r: LaunchResult, t: TopologyFacts,
                        min_busbw: float | None) -> list[Finding]:
    out: list[Finding] = []
    backend = "nccl" if "nccl" in r.stages_passed else "gloo"
    ar = [b for b in r.bandwidth if b.backend == backend and b.op == "all_reduce"]
    if not ar:
        return out
    top = max(ar, key=lambda b: b.size_bytes)
    shown = f"{backend} all_reduce {human_size(top.size_bytes)}: busbw " \
            f"{top.busbw_gbps:.3g} GB/s (algbw {top.algbw_gbps:.3g} GB/s, {r.world_size} ranks)"
    if min_busbw is not None and r.world_size < 2:
        out.append(Finding(
            "dist_min_busbw", "info", "--min-busbw not applied: one rank", shown,
            "busbw is 0 by definition with one rank (nothing crosses a link); launch 2+ "
            "ranks (--nproc, --nnodes) to measure it"))
    elif min_busbw is not None:
        ok = top.busbw_gbps >= min_busbw
        out.append(Finding(
            "dist_min_busbw", "ok" if ok else "error",
            f"busbw {'meets' if ok else 'below'} --min-busbw {min_busbw:g} GB/s", shown,
            None if ok else "see the topology findings; rerun with NCCL_DEBUG=INFO to see "
            "the transport (P2P/SHM/NET) NCCL chose"))
    links = [lk.expected_busbw_gbps for lk in t.links if lk.expected_busbw_gbps]
    if backend == "nccl" and links and top.size_bytes >= LINK_SIZE_MIN and r.world_size > 1:
        expected = min(links)
        if top.busbw_gbps < LINK_FRACTION_WARN * expected:
            out.append(Finding(
                "dist_busbw_below_link", "warn", f"busbw is {top.busbw_gbps / expected:.0%} "
                f"of what the link should give (~{expected:.0f} GB/s)", shown,
                "NCCL_DEBUG=INFO shows whether it uses P2P or falls back to SHM/NET; check "
                "NCCL_P2P_DISABLE, ACS/IOMMU and other jobs on these GPUs"))
    return out


def launch_findings(r: LaunchResult, t: TopologyFacts, *,
                    min_busbw: float | None = None) -> list[Finding]:
    """What the ranks did: one finding per stage, wrong elements, bandwidth, the hang."""
    out = []
    for stage in r.stages_passed:
        what = {"rendezvous": f"rendezvous: {r.world_size} ranks joined",
                "gloo": "gloo collectives correct (CPU)",
                "nccl": f"NCCL collectives correct ({', '.join(r.device_names) or 'GPU'})"}
        out.append(Finding(f"dist_{stage}_ok", "ok", what[stage],
                           f"{r.world_size} ranks, {r.duration_s:.1f} s", None))
    for c in r.checks:
        if not c.ok:
            out.append(Finding(
                "dist_collective_wrong", "error", f"{c.backend} {c.op} returned {c.wrong} "
                f"wrong element(s) of {c.elements}", "rank-dependent values, compared "
                "exactly with the expected result",
                "a broken transport corrupts data: rerun with NCCL_DEBUG=INFO, test without "
                "P2P (NCCL_P2P_DISABLE=1) to locate it, check GPU memory (ECC) errors"))
    if r.hang is not None:
        limit = r.timeout_s or r.duration_s
        title = (f"timed out (--timeout {limit:g} s) in the {r.hang.stage} stage"
                 if r.timed_out else f"failed in the {r.hang.stage} stage")
        if r.hang.stage in ("nccl",) and "gloo" in r.stages_passed:
            title += " (network and rendezvous are fine: gloo passed; NCCL transport broken)"
        elif r.hang.stage in ("rendezvous", "launch"):
            title += " (network/rendezvous broken: no collective ran)"
        fix = "; ".join(f"{i}. {s}" for i, s in enumerate(r.hang.next_steps, 1))
        # after our own kill the launcher's last words are only "got signal: 15"
        tail = r.launcher_output.strip().splitlines()[-1:] if r.launcher_output and \
            not r.timed_out else []
        evidence = r.hang.summary + (f" | launcher: {tail[0][:300]}" if tail else "")
        out.append(Finding(f"dist_{r.hang.stage}_failed", "error", title, evidence, fix,
                           "dist_rendezvous_timeout" if r.hang.stage == "rendezvous"
                           else None))
    return out + _bandwidth_findings(r, t, min_busbw)
