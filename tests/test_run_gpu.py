"""``devcheck run`` / ``watch`` on a real NVIDIA GPU (skipped here; run by the GPU job).

These check what no fake can: that NVML really lists the job's pid (or a container hides
it), that per-process memory is attributed, and that a CPU-only job on a GPU machine gets
the "never created a CUDA context" verdict.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PY = sys.executable

GPU_JOB = textwrap.dedent("""
    import time, torch
    x = torch.randn(4096, 4096, device="cuda")
    t = time.time()
    while time.time() - t < 3:
        y = x @ x
    torch.cuda.synchronize()
    print("done", float(y[0, 0]) == float(y[0, 0]))
""")


def run_json(tmp_path: Path, code: str) -> dict:
    res = subprocess.run([PY, "-m", "devcheck", "run", "-i", "0.1", "--json", "--no-plot",
                          "--out", str(tmp_path / "o"), "--", PY, "-c", code],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.splitlines()[-1])


@pytest.mark.requires_cuda
def test_a_cuda_job_is_seen_on_its_gpu(tmp_path: Path) -> None:
    doc = run_json(tmp_path, GPU_JOB)
    used = [g for g in doc["stats"]["gpus"] if g["job_samples"] > 0]
    if "gpu_use_unknown" in {v["id"] for v in doc["verdicts"]}:
        pytest.skip("the job cannot be matched to NVML's processes here: " + doc["devices"][0])
    assert used, doc["devices"]
    g = used[0]
    assert g["job_memory_peak_bytes"] is None or g["job_memory_peak_bytes"] > 64 * 1024**2
    assert g["util_mean_pct"] is not None and g["util_mean_pct"] > 0
    assert "cpu_only" not in {v["id"] for v in doc["verdicts"]}
    assert doc["devices"][0].startswith(f"GPU {g['index']}")


@pytest.mark.requires_cuda
def test_a_cpu_job_on_a_gpu_machine_never_created_a_context(tmp_path: Path) -> None:
    doc = run_json(tmp_path, "import torch; x = torch.randn(512, 512)\n"
                             "for _ in range(300): x = (x @ x).tanh()\nprint('cuda?', "
                             "torch.cuda.is_available())")
    ids = {v["id"] for v in doc["verdicts"]}
    if "gpu_use_unknown" in ids:
        pytest.skip("the job cannot be matched to NVML's processes here: " + doc["devices"][0])
    assert doc["devices"][0] == "the job never created a CUDA context: it ran on the CPU"
    assert "cpu_only" in ids


@pytest.mark.requires_cuda
def test_watch_in_process_sees_this_process_on_the_gpu() -> None:
    torch = pytest.importorskip("torch")
    import devcheck

    with devcheck.watch(interval=0.05) as w:
        x = torch.randn(2048, 2048, device="cuda")
        for _ in range(200):
            x = (x @ x).tanh()
        torch.cuda.synchronize()
    stats = w.stats()
    if not any(g.processes_listed for g in stats.gpus) or any(g.unknown_pid_share
                                                              for g in stats.gpus):
        pytest.skip("NVML's processes cannot be matched here: " + w.summary().devices[0])
    assert any(g.job_samples > 0 for g in stats.gpus), w.summary().devices
