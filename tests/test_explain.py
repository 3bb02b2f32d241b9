"""The matcher on real message variants, whole tracebacks, unrelated errors and junk."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from devcheck.pitfalls import all_pitfalls
from devcheck.pitfalls.explain import (
    WINDOW_CHARS,
    Match,
    decode,
    explain_exception,
    explain_text,
    render,
)

DATA = Path(__file__).parent / "data" / "explain"


def top(text: str) -> str | None:
    matches = explain_text(text)
    return matches[0].id if matches else None


def ids(text: str) -> list[str]:
    return [m.id for m in explain_text(text)]


# ---------------------------------------------------------------- every known form


@pytest.mark.parametrize(
    ("pitfall_id", "example"),
    [(p.id, s.example) for p in all_pitfalls() for s in p.symptoms],
)
def test_every_symptom_example_finds_its_pitfall(pitfall_id: str, example: str) -> None:
    assert pitfall_id in ids(example)


# Shared messages: the pitfall whose message it primarily is must rank first.
SHARED_FIRST = {
    "tensor_to_not_inplace": "mixed_devices",
    "default_device_fork_worker": "cuda_init_before_fork",
    "no_cpu_fallback": "no_driver",
}


@pytest.mark.parametrize("pitfall", all_pitfalls(), ids=lambda p: p.id)
def test_first_symptom_ranks_its_pitfall_first(pitfall: object) -> None:
    expected = SHARED_FIRST.get(pitfall.id, pitfall.id)  # type: ignore[attr-defined]
    assert top(pitfall.symptoms[0].example) == expected  # type: ignore[attr-defined]


VARIANTS = [
    # (text, expected top id) — old and new torch texts, cuda:1 vs cuda:0, MPS forms
    ("RuntimeError: Expected a 'cuda' device type for generator but found 'cpu'",
     "default_device_sampler_generator"),
    ("RuntimeError: Expected a 'cuda:1' device type for generator but found 'cpu'",
     "default_device_sampler_generator"),
    ("RuntimeError: Expected a 'mps:0' generator device but found 'cpu'",
     "default_device_sampler_generator"),
    ("RuntimeError: Expected a 'mps' device type for generator but found 'cpu'",
     "default_device_sampler_generator"),
    ("RuntimeError: Expected all tensors to be on the same device, but found at least two "
     "devices, cuda:0 and cpu! (when checking argument for argument mat1 in method "
     "wrapper_addmm)", "mixed_devices"),
    ("RuntimeError: Expected all tensors to be on the same device, but found at least two "
     "devices, cpu and cuda:1! (when checking argument for argument index in method "
     "wrapper__index_select)", "mixed_devices"),
    ("RuntimeError: Expected all tensors to be on the same device, but got mat2 is on cuda:1, "
     "different from other tensors on cuda:0 (when checking argument in method "
     "wrapper_CUDA_mm)", "mixed_devices"),
    ("RuntimeError: Expected all tensors to be on the same device, but got index is on mps:0,"
     " different from other tensors on cpu", "mixed_devices"),
    ("RuntimeError: Input type (torch.cuda.FloatTensor) and weight type (torch.FloatTensor) "
     "should be the same", "mixed_devices"),
    ("RuntimeError: Placeholder storage has not been allocated on MPS device!",
     "mixed_devices"),
    ("TypeError: can't convert cuda:1 device type tensor to numpy. Use Tensor.cpu() to copy "
     "the tensor to host memory first.", "cuda_tensor_to_numpy"),
    ("TypeError: can't convert mps:0 device type tensor to numpy. Use Tensor.cpu() to copy "
     "the tensor to host memory first.", "cuda_tensor_to_numpy"),
    ("TypeError: can't convert CUDA tensor to numpy. Use Tensor.cpu() to copy the tensor to "
     "host memory first.", "cuda_tensor_to_numpy"),
    ("RuntimeError: Can't call numpy() on Variable that requires grad. Use var.detach().numpy()"
     " instead.", "numpy_on_requires_grad"),
    ("RuntimeError: CUDA error (10): invalid device ordinal", "invalid_device_ordinal"),
    ("torch.AcceleratorError: CUDA error: invalid device ordinal\nGPU device may be out of "
     "range, do you have enough GPUs?\nCUDA kernel errors might be asynchronously reported",
     "invalid_device_ordinal"),
    ("RuntimeError: called a synchronizing CUDA operation", "hidden_host_sync"),
    ("THCudaCheck FAIL file=torch/csrc/cuda/Module.cpp line=32 error=10 : invalid device "
     "ordinal", "invalid_device_ordinal"),
    ("torch.AcceleratorError: CUDA error: device-side assert triggered\nSearch for "
     "`cudaErrorAssert' in https://docs.nvidia.com/cuda/", "device_side_assert"),
    ("UserWarning: CUDA initialization: The NVIDIA driver on your system is too old (found "
     "version 11040).", "driver_too_old"),
    ("RuntimeError: Attempting to deserialize object on CUDA device 1 but "
     "torch.cuda.device_count() is 1.", "invalid_device_ordinal"),
    ("epoch 3, loss nan, train acc 0.100, test acc 0.100", "unstable_softmax"),
]


@pytest.mark.parametrize(("text", "expected"), VARIANTS)
def test_real_variants(text: str, expected: str) -> None:
    assert top(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("RuntimeError: Expected a 'cuda' device type for gen", "default_device_sampler_generator"),
        ("RuntimeError: Expected all tensors to be on the same dev", "mixed_devices"),
        ("TypeError: can't convert cuda:0 device type ten", "cuda_tensor_to_numpy"),
        ("RuntimeError: Attempting to deserialize object on a CUDA dev",
         "gpu_checkpoint_on_cpu"),
        ("RuntimeError: Cannot re-initialize CUDA in forked subpr", "cuda_init_before_fork"),
    ],
)
def test_messages_cut_mid_line(text: str, expected: str) -> None:
    matches = explain_text(text)
    assert matches and matches[0].id == expected
    assert any(e.startswith("message (cut)") for e in matches[0].evidence)


# ---------------------------------------------------------------- whole tracebacks


def test_learner_traceback_is_explained_correctly() -> None:
    text = (DATA / "learner_windows_notebook.txt").read_text()
    matches = explain_text(text)
    m = matches[0]
    assert m.id == "default_device_sampler_generator"
    assert m.score >= 1.0
    # Windows paths: both frames seen through the backslashes
    assert any("sampler.py:189" in e for e in m.evidence)
    assert any("_device.py:104" in e for e in m.evidence)
    mech = m.mechanism
    assert "DeviceContext" in mech and "device='cuda'" in mech and "torch.randperm" in mech
    assert "CPU torch.Generator()" in mech
    assert "MAIN process" in mech and "num_workers is irrelevant" in mech
    fixes = m.fix.splitlines()
    assert len(fixes) == len(m.fixes) == 4
    assert "global default device" in fixes[0]
    assert "W = torch.normal(0, 0.01, size=(784, 10), device=device" in m.fixes[0].code
    assert "net.to(" not in m.fixes[0].code  # the book's net is a function: no .to()
    assert "nn.Module" in fixes[1]
    assert "generator" in fixes[2].lower() and "default_device_not_applied" in fixes[2]
    assert "CPU device scope" in fixes[3]
    assert m.confidence == "high"
    assert any("fork" in w and "inherit" in w for w in m.warnings)
    assert m.reproduce_command == "devcheck pitfalls run default_device_sampler_generator"


def test_learner_traceback_with_message_cut_off_still_found_from_frames() -> None:
    text = (DATA / "learner_windows_notebook.txt").read_text()
    cut = text[: text.rindex("RuntimeError: Expected")] + "RuntimeError: Expec"
    m = explain_text(cut)[0]
    assert m.id == "default_device_sampler_generator"
    assert any(e.startswith("frame:") for e in m.evidence)


def test_real_ansi_ipython_traceback_through_sampler_and_device_py() -> None:
    raw = (DATA / "ipython_ansi_meta_default_device_sampler.txt").read_text()
    assert "\x1b[" in raw
    m = explain_text(raw)[0]
    assert m.id == "default_device_sampler_generator"
    assert all("\x1b" not in e for e in m.evidence)


def test_real_ansi_ipython_numpy_traceback() -> None:
    raw = (DATA / "ipython_ansi_numpy_requires_grad.txt").read_text()
    assert top(raw) == "numpy_on_requires_grad"


def test_mps_issue_traceback() -> None:
    m = explain_text((DATA / "mps_issue_110820.txt").read_text())[0]
    assert m.id == "default_device_sampler_generator"
    assert "device='mps'" in m.mechanism


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("linux_dataloader_worker_cuda_reinit.txt", "cuda_init_before_fork"),
        ("linux_shm_exhausted.txt", "dataloader_shm_exhausted"),
        ("linux_no_driver.txt", "no_driver"),
        ("linux_torch_load_cuda_checkpoint.txt", "gpu_checkpoint_on_cpu"),
        ("linux_anomaly_nan.txt", "unstable_softmax"),
    ],
)
def test_real_linux_tracebacks(name: str, expected: str) -> None:
    assert top((DATA / name).read_text()) == expected


def test_fork_worker_with_default_device_frames_ranks_default_device_case_first() -> None:
    text = (
        "Traceback (most recent call last):\n"
        '  File "train.py", line 40, in <module>\n    for X, y in loader:\n'
        "RuntimeError: Caught RuntimeError in DataLoader worker process 0.\n"
        "Original Traceback (most recent call last):\n"
        '  File "/usr/lib/python3/site-packages/torch/utils/data/_utils/worker.py", line 349, '
        "in _worker_loop\n"
        '  File "/usr/lib/python3/site-packages/torch/utils/data/_utils/collate.py", line 212, '
        "in collate_int_fn\n"
        '  File "/usr/lib/python3/site-packages/torch/utils/_device.py", line 104, in '
        "__torch_function__\n"
        "RuntimeError: Cannot re-initialize CUDA in forked subprocess. To use CUDA with "
        "multiprocessing, you must use the 'spawn' start method\n"
    )
    got = ids(text)
    assert got[:2] == ["default_device_fork_worker", "cuda_init_before_fork"]


def test_explain_exception_uses_the_live_traceback() -> None:
    try:
        raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use "
                           "tensor.detach().numpy() instead.")
    except RuntimeError as exc:
        matches = explain_exception(exc)
    assert matches[0].id == "numpy_on_requires_grad"
    assert isinstance(matches[0], Match)
    assert {"id", "score", "mechanism", "fix"} <= set(matches[0].to_dict())


# ---------------------------------------------------------------- no false matches


UNRELATED = [
    "KeyError: 'label'",
    "ModuleNotFoundError: No module named 'd2l'",
    "RuntimeError: mat1 and mat2 shapes cannot be multiplied (256x784 and 785x10)",
    "FileNotFoundError: [Errno 2] No such file or directory: '../data/FashionMNIST/raw'",
    "ValueError: too many values to unpack (expected 2)",
    "TypeError: 'int' object is not callable",
    "IndexError: list index out of range",
    "epoch 1, loss 0.785, train acc 0.749, test acc 0.790\ninfo: done, loss 0.51",
    "Traceback (most recent call last):\n  File \"/x/torch/utils/data/dataloader.py\", line 1, "
    "in __next__\nKeyboardInterrupt",
    "SyntaxError: invalid syntax",
    "Successfully installed torch-2.14.1 torchvision-0.29.1",
]


@pytest.mark.parametrize("text", UNRELATED)
def test_unrelated_errors_do_not_match(text: str) -> None:
    assert explain_text(text) == []


def test_no_match_render_says_so_and_suggests_doctor() -> None:
    text = render([], 12)
    assert "No known device pitfall matches" in text and "devcheck doctor" in text


# ---------------------------------------------------------------- hostile input


def test_empty_and_whitespace() -> None:
    assert explain_text("") == []
    assert explain_text(" \n\t\r\n") == []


def test_binary_junk() -> None:
    data = random.Random(0).randbytes(1_000_000) + b"\x00\xff\xfe\x1b[" * 1000
    assert explain_text(decode(data)) == []


def test_utf16_input_is_decoded() -> None:
    data = "RuntimeError: Found no NVIDIA driver on your system.".encode("utf-16")
    assert top(decode(data)) == "no_driver"


def test_ten_megabytes_with_the_error_at_the_end() -> None:
    junk = ("2026-11-27 12:00:00 INFO step 12345 loss 0.3456 lr 0.1 "
            "expected all tensors ((((((((( [[[[ ''''\n") * 140_000
    assert len(junk) > 10_000_000
    text = junk + "RuntimeError: Can't call numpy() on Tensor that requires grad."
    matches = explain_text(text)
    assert matches[0].id == "numpy_on_requires_grad"
    assert len(text) > 8 * WINDOW_CHARS


def test_pathological_repetition_of_anchors() -> None:
    text = "expected all tensors to be on the same device " * 200_000
    got = explain_text(text)  # anchors everywhere, the window regex still matches quickly
    assert got and got[0].id == "mixed_devices"


def test_input_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = (f"__import__('os').system('touch {marker}')\n"
            f"exec(\"open('{marker}', 'w')\")\n{{{{7*7}}}} $(touch {marker}) `touch {marker}`")
    explain_text(text)
    assert not marker.exists()


def test_explain_module_does_not_import_torch() -> None:
    code = ("import sys; from devcheck.pitfalls.explain import explain_text; "
            "explain_text(open(sys.argv[1]).read()); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code,
                    str(DATA / "learner_windows_notebook.txt")], check=True)


# ---------------------------------------------------------------- issue 10: new pitfalls


OLD_AND_NEW_WORDINGS = [
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB",
     "cuda_out_of_memory"),
    ("RuntimeError: cuda runtime error (2) : out of memory at /pytorch/aten/src/THC/"
     "THCTensorRandom.cu:25", "cuda_out_of_memory"),
    ("THCudaCheck FAIL file=/pytorch/aten/src/THC/THCGeneral.cpp line=405 error=8 : invalid "
     "device function", "gpu_arch_not_in_wheel"),
    ("CUDA error (98): invalid device function", "gpu_arch_not_in_wheel"),
    ("RuntimeError: cuda runtime error (3) : initialization error at /pytorch/aten/src/THC/"
     "THCGeneral.cpp:51", "cuda_init_before_fork"),
    ("RuntimeError :cuda runtime error (30)", "cuda_unknown_error"),
    ("RuntimeError: cuda runtime error (35) : CUDA driver version is insufficient for CUDA "
     "runtime version at /pytorch/torch/csrc/cuda/Module.cpp:34", "driver_too_old"),
    ("THCudaCheck FAIL file=/pytorch/aten/src/THC/THCGeneral.cpp line=74 error=38 : no "
     "CUDA-capable device is detected", "no_driver"),
    ("Check failed: error == cudaSuccess (100 vs. 0) no CUDA-capable device is detected",
     "no_driver"),
    ("RuntimeError: cuda runtime error (77) : an illegal memory access was encountered at "
     "/pytorch/aten/src/THC/generic/THCTensorCopy.c:20", "illegal_memory_access"),
    ("RuntimeError: cuda runtime error (710) : device-side assert triggered at "
     "/pytorch/aten/src/THC/THCReduceAll.cuh:327", "device_side_assert"),
    ("THNN.lua:110: cuda runtime error (59) : device-side assert triggered", "device_side_assert"),
    ("RuntimeError: cuDNN error: CUDNN_STATUS_MAPPING_ERROR", "cudnn_error"),
    ("RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
     "cublas_error"),
    ("[E ProcessGroupNCCL.cpp:737] [Rank 1] Watchdog caught collective operation timeout: "
     "WorkNCCL(SeqNum=469508, OpType=ALLREDUCE, Timeout(ms)=1800000) ran for 1802212 "
     "milliseconds before timing out.", "nccl_error"),
    ("TypeError: Cannot convert a MPS Tensor to float64 dtype as the MPS framework doesn't "
     "support float64. Please use float32 instead.", "mps_float64"),
    ("RuntimeError: MPS backend out of memory (MPS allocated: 8.89 GB, other allocations: "
     "172.98 MB, max allowed: 9.07 GB). Tried to allocate 6.25 MB on private pool.",
     "mps_out_of_memory"),
    ("NotImplementedError: The operator 'aten::_fft_r2c' is not currently implemented for the "
     "MPS device.", "mps_op_not_implemented"),
    # a typo'd / retyped pin_memory warning: stable fragments, any case and spacing
    ("UserWarning: 'pin_memory' argument is set as true but no acclerator is found",
     "pin_memory_without_accelerator"),
    ("warning:  PIN_MEMORY   argument set as True, but no accelerator was found",
     "pin_memory_without_accelerator"),
]


@pytest.mark.parametrize(("text", "expected"), OLD_AND_NEW_WORDINGS)
def test_old_cuda_error_numbers_and_new_wordings(text: str, expected: str) -> None:
    assert top(text) == expected


def test_cuda_error_numbers_map_old_and_new_enums() -> None:
    from devcheck.pitfalls import REGISTRY

    owners: dict[int, str] = {}
    for p in REGISTRY.values():
        for code in p.cuda_errors:
            assert code not in owners, f"cudaError {code} claimed twice"
            owners[code] = p.id
    # the CUDA runtime's cudaError_t, before and since CUDA 10.1
    assert owners[2] == "cuda_out_of_memory"
    assert owners[8] == owners[98] == "gpu_arch_not_in_wheel"
    assert owners[38] == owners[100] == "no_driver"
    assert owners[77] == owners[700] == "illegal_memory_access"
    assert owners[59] == owners[710] == "device_side_assert"
    assert owners[30] == owners[999] == "cuda_unknown_error"
    assert owners[10] == owners[101] == "invalid_device_ordinal"
    assert owners[35] == "driver_too_old"
