"""explain's advice: fitted to what the text and this machine say, and rendered cleanly.

Issue 10: driver version, GPU architecture, CUDA_VISIBLE_DEVICES, two GPUs, the reverse
generator form, the numpy error inside torch's sampler, OOM accounting and NVML processes,
macOS and GPU-less machines, the book's function-style net; no placeholder survives, every
fix line importing devcheck/softmax imports, a confidence word instead of a score.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devcheck.pitfalls.explain import explain_text, render

DATA = Path(__file__).parent / "data" / "explain"


def top(text: str) -> str | None:
    matches = explain_text(text)
    return matches[0].id if matches else None


# ---------------------------------------------------------------- advice from the text


def first_fix(text: str, machine: object = None) -> tuple[str, str, str]:
    m = explain_text(text, machine=machine)[0]
    return m.id, m.fixes[0].title, m.fixes[0].code


def test_driver_version_in_the_message_picks_a_wheel_that_driver_supports() -> None:
    pid, title, code = first_fix("RuntimeError: The NVIDIA driver on your system is too old "
                                 "(found version 11040).")
    assert pid == "driver_too_old" and "whl/cu118" in code
    m = explain_text("UserWarning: CUDA initialization: The NVIDIA driver on your system is too "
                     "old (found version 9000).")[0]
    assert "CUDA 9.0" in " ".join(m.notes)
    assert "Update the driver" in m.fixes[0].title  # no wheel runs on a CUDA 9.0 driver
    assert not any("whl/cu13" in f.code for f in m.fixes[:1])


def test_gpu_architecture_in_the_text_picks_the_matching_wheel() -> None:
    text = ("UserWarning: NVIDIA GeForce RTX 5090 with CUDA capability sm_120 is not compatible "
            "with the current PyTorch installation.\nThe current PyTorch install supports CUDA "
            "capabilities sm_50 sm_60 sm_70 sm_75 sm_80 sm_86 sm_90.")
    pid, title, code = first_fix(text)
    assert pid == "gpu_arch_not_in_wheel" and "sm_120" in title and "whl/cu128" in code
    pascal = ("UserWarning: Found GPU0 NVIDIA GeForce GTX 1080 which is of compute capability "
              "(CC) 6.1.\nRuntimeError: CUDA error: no kernel image is available for execution "
              "on the device")
    assert "whl/cu126" in first_fix(pascal)[2]
    by_name = ("GPU 0: NVIDIA GeForce GTX 1080\nRuntimeError: CUDA error: no kernel image is "
               "available for execution on the device")
    assert "whl/cu126" in first_fix(by_name)[2]


def test_cuda_visible_devices_in_the_text_comes_first() -> None:
    text = ("os.environ['CUDA_VISIBLE_DEVICES'] = '1'\n...\n"
            "RuntimeError: No CUDA GPUs are available")
    pid, title, code = first_fix(text)
    assert pid == "invalid_device_ordinal"
    assert "CUDA_VISIBLE_DEVICES='1'" in title and "nvidia-smi -L" in title
    assert top("RuntimeError: No CUDA GPUs are available") == "no_driver"


def test_two_gpu_ordinals_get_a_two_gpu_explanation() -> None:
    m = explain_text("RuntimeError: Expected all tensors to be on the same device, but found at "
                     "least two devices, cuda:0 and cuda:1!")[0]
    assert m.id == "mixed_devices" and "two different GPUs" in m.mechanism
    assert "batch on CPU" not in m.mechanism and "CPU" not in m.fixes[0].title
    new = explain_text("RuntimeError: Expected all tensors to be on the same device, but got "
                       "mat2 is on cuda:1, different from other tensors on cuda:0")[0]
    assert "two different GPUs" in new.mechanism
    one = explain_text("RuntimeError: Expected all tensors to be on the same device, but found "
                       "at least two devices, cuda:0 and cpu!")[0]
    assert "two different GPUs" not in one.mechanism


def test_reverse_generator_message_has_its_own_cause_and_fix() -> None:
    m = explain_text("RuntimeError: Expected a 'cpu' device type for generator but found "
                     "'cuda'")[0]
    assert m.id == "default_device_sampler_generator"
    assert m.mechanism.startswith("The reverse case")
    assert all("Generator(device=" not in f.code for f in m.fixes)  # the cause, not a fix
    assert "CPU generator" in m.fixes[0].title


def test_numpy_error_inside_torch_sampler_is_the_default_device_pitfall() -> None:
    text = (
        "Traceback (most recent call last):\n"
        '  File "train.py", line 30, in <module>\n    for X, y in train_iter:\n'
        '  File "/usr/lib/python3/site-packages/torch/utils/data/dataloader.py", line 631, in '
        "__next__\n"
        '  File "/usr/lib/python3/site-packages/torch/utils/data/sampler.py", line 165, in '
        "__iter__\n    yield from map(int, torch.randperm(n, generator=generator).numpy())\n"
        "TypeError: can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy "
        "the tensor to host memory first.\n")
    got = explain_text(text)
    assert got[0].id == "default_device_sampler_generator"
    assert any("raised inside torch/utils/data/sampler.py" in e for e in got[0].evidence)
    assert top("TypeError: can't convert cuda:0 device type tensor to numpy.") == \
        "cuda_tensor_to_numpy"


def test_default_device_mixed_error_is_default_device_not_applied() -> None:
    text = ("torch.set_default_device('cuda')\nW = torch.normal(0, 0.01, size=(784, 10))\n"
            "RuntimeError: Expected all tensors to be on the same device, but got mat2 is on "
            "cpu, different from other tensors on cuda:0 (when checking argument in method "
            "wrapper_CUDA_mm)")
    m = explain_text(text)[0]
    assert m.id == "default_device_not_applied"
    assert "torch.normal is not among them" in m.mechanism and "ToTensor" in m.mechanism
    assert "device=device" in m.fixes[0].code


def test_oom_notes_read_the_numbers_and_this_machines_gpu_processes() -> None:
    from devcheck.pitfalls._advice import Machine

    text = ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 496.00 MiB. GPU 0 has "
            "a total capacity of 14.75 GiB of which 235.06 MiB is free. Process 20398 has 14.52 "
            "GiB memory in use. Of the allocated memory 4.06 GiB is allocated by PyTorch, and "
            "9.30 GiB is reserved by PyTorch but unallocated.")
    machine = Machine(platform="linux", gpu_memory=("GPU 0 (Tesla T4) 14.5 of 15.0 GiB used by "
                                                     "pid 20398 python 14.5 GiB",))
    m = explain_text(text, machine=machine)[0]
    notes = " ".join(m.notes)
    assert m.id == "cuda_out_of_memory"
    assert "Process 20398 holds 14.52 GiB" in notes
    assert "expandable_segments:True" in notes  # 9.3 GiB reserved but unallocated
    assert "On this machine now (NVML): GPU 0 (Tesla T4)" in notes
    assert "empty_cache" in m.mechanism and "no_grad" in m.mechanism


def test_macos_and_gpu_less_machines_get_no_cuda_reinstall_first() -> None:
    from devcheck.pitfalls._advice import Machine

    text = "AssertionError: Torch not compiled with CUDA enabled"
    mac = explain_text(text, machine=Machine(platform="darwin"))[0]
    assert "MPS" in mac.fixes[0].title
    assert not any("whl/cu" in f.code for f in mac.fixes)
    box = explain_text("RuntimeError: Found no NVIDIA driver on your system.",
                       machine=Machine(platform="linux", nvidia_gpus=0))[0]
    assert box.fixes[0].title.startswith("Use the CPU")
    assert "no NVIDIA GPU" in " ".join(box.notes)


@pytest.mark.parametrize("pid", ["default_device_sampler_generator", "mixed_devices",
                                 "cuda_available_but_unused"])
def test_fixes_fit_the_books_function_style_net(pid: str) -> None:
    from devcheck.pitfalls import REGISTRY

    fixes = REGISTRY[pid].fixes
    book = next(f for f in fixes if "W = torch.normal(" in f.code)
    assert "device=device" in book.code and "b = torch.zeros(10, device=device" in book.code
    assert "net.to(" not in book.code
    assert fixes.index(book) < next(i for i, f in enumerate(fixes) if "nn." in f.code)


# ---------------------------------------------------------------- rendering


def test_no_placeholder_survives_in_any_pitfall_text_or_json() -> None:
    import json
    import re

    from click.testing import CliRunner

    from devcheck.cli import cli
    from devcheck.pitfalls import all_pitfalls

    placeholder = re.compile(r"\{(?:device|gpu|index|id|dev)\}")
    runner = CliRunner()
    for p in all_pitfalls():
        for args in (["pitfalls", "show", p.id], ["pitfalls", "show", p.id, "--json"]):
            out = runner.invoke(cli, args).output
            assert not placeholder.search(out), (p.id, args)
        assert not placeholder.search(json.dumps(p.to_dict()))
        for s in p.symptoms:
            m = explain_text(s.example)
            assert not any(placeholder.search(json.dumps(x.to_dict())) for x in m)


def test_every_code_line_importing_devcheck_or_softmax_imports() -> None:
    import re

    from devcheck.pitfalls import all_pitfalls

    line_rx = re.compile(r"^\s*(from (?:devcheck|softmax)[\w.]* import [\w, ]+|"
                         r"import (?:devcheck|softmax)[\w.]*)\s*(?:#.*)?$")
    checked = 0
    for p in all_pitfalls():
        codes = [f.code for f in p.fixes] + [f.code for s in p.symptoms for f in s.fixes]
        for code in codes:
            for line in code.splitlines():
                m = line_rx.match(line)
                if m:
                    exec(m.group(1), {})  # noqa: S102 - our own fix text, an import only
                    checked += 1
    assert checked >= 1


def test_render_says_a_confidence_word_and_keeps_fix_code() -> None:
    from devcheck.pitfalls import REGISTRY

    text = (DATA / "learner_windows_notebook.txt").read_text()
    out = render(explain_text(text), len(text))
    assert "confidence: high" in out and "score" not in out
    assert "W = torch.normal(0, 0.01, size=(784, 10), device=device" in out
    assert "Where in torch:" in out
    plot = explain_text("<Figure size 350x250 with 1 Axes>")
    assert "Where in torch" not in render(plot, 10)
    assert REGISTRY["notebook_plot_in_script"].source_label == "Where"


def test_where_in_torch_labels_only_torch_sources() -> None:
    from devcheck.pitfalls import all_pitfalls

    for p in all_pitfalls():
        first = p.source.split(" ", 1)[0].lower()
        if p.source_label == "Where in torch":
            assert first.startswith(("torch", "aten", "c10")), p.id
        assert not (p.source_label == "Where in torch" and ("matplotlib" in first or
                                                            "ipython" in first))


def test_this_machine_is_not_blamed_for_an_error_pasted_from_another() -> None:
    from devcheck.pitfalls._advice import Machine

    gpu_less = Machine(platform="linux", nvidia_gpus=0)
    old = explain_text("RuntimeError: The NVIDIA driver on your system is too old (found "
                       "version 9000).", machine=gpu_less)[0]
    assert not old.fixes[0].title.startswith("Use the CPU")  # a driver error has a GPU
    assert "no NVIDIA GPU" not in " ".join(old.notes)
    assert len([f for f in old.fixes if "nvidia-driver" in f.code]) == 1  # no duplicate
    assert not any("whl/cu" in f.code for f in old.fixes)  # no wheel runs on CUDA 9.0
    named = explain_text("RuntimeError: No CUDA GPUs are available\nGPU 0: NVIDIA GeForce RTX "
                         "3080", machine=gpu_less)[0]
    assert not named.fixes[0].title.startswith("Use the CPU")
    linux_text = ('  File "/home/u/.venv/lib/python3.11/site-packages/torch/cuda/__init__.py", '
                  "line 372, in _lazy_init\nAssertionError: Torch not compiled with CUDA enabled")
    on_mac = explain_text(linux_text, machine=Machine(platform="darwin"))[0]
    assert "MPS" not in on_mac.fixes[0].title  # a Linux traceback read on a Mac


def test_cli_oom_lists_this_machines_gpu_processes_from_nvml(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from devcheck.cli import cli
    from devcheck.facts import GpuFacts, GpuProcess, NvmlFacts
    from devcheck.probe import devices, nvml

    gpu = GpuFacts(index=0, name="NVIDIA A10G", memory_total_bytes=24 * 2**30,
                   memory_used_bytes=22 * 2**30,
                   processes=(GpuProcess(pid=4242, name="python\x1b[31m",
                                         used_memory_bytes=20 * 2**30),))
    monkeypatch.setattr(nvml, "probe_nvml", lambda timeout_s=None: NvmlFacts(
        available=True, driver_version="580.65.06", gpus=(gpu,)))
    monkeypatch.setattr(devices, "probe_machine", lambda: devices.MachineFacts(
        torch_installed=True, cuda_build="13.0", driver_cuda_version=13000, linux=True))
    err = tmp_path / "oom.txt"
    err.write_text("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. "
                   "GPU 0 has a total capacity of 22.06 GiB of which 1.10 GiB is free.")
    out = CliRunner().invoke(cli, ["explain", str(err)]).output
    assert "On this machine now (NVML): GPU 0 (NVIDIA A10G) 22.0 of 24.0 GiB used by pid 4242" \
        in out.replace("\n    ", " ")
    assert "\x1b" not in out  # a process name any user can set reaches the terminal escaped
    data = json.loads(CliRunner().invoke(cli, ["explain", str(err), "--json"]).output)
    assert data["machine"]["gpu_memory"][0].startswith("GPU 0 (NVIDIA A10G)")
    plain = json.loads(CliRunner().invoke(cli, ["explain", str(err), "--json",
                                                "--no-here"]).output)
    assert plain["machine"] is None and not any("NVML" in n for n in plain["matches"][0]["notes"])


def test_a_named_gpu_gets_no_wheel_advice_for_another_architecture() -> None:
    text = ("NVIDIA GeForce RTX 3080 with CUDA capability sm_86 is not compatible with the current "
            "PyTorch installation.\nThe current PyTorch install supports CUDA capabilities sm_37 "
            "sm_50 sm_60 sm_70 sm_75.")
    m = explain_text(text)[0]
    assert "sm_86" in m.fixes[0].title and "whl/cu128" in m.fixes[0].code
    assert [f for f in m.fixes if "whl/cu" in f.code] == [m.fixes[0]]
