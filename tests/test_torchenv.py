"""The torch probe: real facts on this machine, torch's reason kept, failures as facts."""

from __future__ import annotations

import sys
import textwrap
import threading
import types
from pathlib import Path

import psutil
import pytest
import torch

from devcheck.facts import TorchFacts
from devcheck.probe import torchenv, torchproc


def test_real_probe_on_this_machine() -> None:
    facts = torchenv.probe_torch()
    assert facts.imported and facts.error is None
    assert facts.version == torch.__version__ and facts.cuda_version == torch.version.cuda
    assert facts.arch_list == tuple(torch.cuda.get_arch_list())
    assert facts.default_device == "cpu"
    cpu = facts.live_checks[0]
    assert cpu.device == "cpu" and cpu.ok and cpu.max_abs_error < 1e-4
    if not torch.cuda.is_available():
        assert facts.cuda_available is False and facts.devices == ()
        if torch.version.cuda:  # a CUDA wheel without a driver: torch's own words are kept
            assert facts.cuda_unavailable_reason
    else:
        assert [c.device for c in facts.live_checks[1:]][:1] == ["cuda:0"]


def test_no_live_means_no_live_checks() -> None:
    facts = torchenv.probe_torch(live=False)
    assert facts.imported and facts.live_checks == ()


def test_child_and_in_process_probes_agree() -> None:
    child = torchenv.probe_torch(live=False)
    here = torchenv.probe_torch(live=False, isolate=False)
    ignore = {"import_seconds"}
    assert {k: v for k, v in child.to_dict().items() if k not in ignore} == {
        k: v for k, v in here.to_dict().items() if k not in ignore}


def test_live_check_failure_is_a_fact() -> None:
    check = torchenv.live_check(torch, "meta")  # meta tensors cannot come back to the CPU
    assert not check.ok and check.error
    check = torchenv.live_check(torch, "no_such_device")
    assert not check.ok and "no_such_device" in check.error


def test_live_check_catches_wrong_results(monkeypatch: pytest.MonkeyPatch) -> None:
    real_matmul = torch.Tensor.__matmul__
    monkeypatch.setattr(torch.Tensor, "__matmul__",
                        lambda a, b: real_matmul(a, b) + (1.0 if a.dtype == torch.float32 else 0))
    check = torchenv.live_check(torch, "cpu")
    assert not check.ok and "differs from the CPU result" in check.error


def test_import_failure_is_a_fact(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> types.ModuleType:
        raise ImportError("libcudnn.so.9: cannot open shared object file")

    monkeypatch.setattr(torchenv, "_import_torch", broken)
    facts = torchenv.probe_torch(isolate=False)
    assert not facts.imported and "libcudnn.so.9" in facts.import_error
    assert facts.import_error.startswith("ImportError")


def test_hung_in_process_probe_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    monkeypatch.setattr(torchenv, "collect_torch", lambda live: release.wait(30))
    try:
        facts = torchenv.probe_torch(timeout_s=0.2, isolate=False)
    finally:
        release.set()
    assert not facts.imported and facts.error == "torch probe timed out after 0.2s"


# --- a broken torch, in the child: fake ``torch`` packages put first on sys.path ------------

FAKE_TORCHES = {
    "segfault_on_import": "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n",
    "os_exit_on_import": "import os, sys\nsys.stderr.write('bye from torch\\n')\nos._exit(7)\n",
    "raises_on_import": "raise ImportError('libcudnn.so.9: cannot open shared object file')\n",
    "segfault_in_cuda": textwrap.dedent("""\
        import os, signal, types
        print("torch chatter on stdout must not break the protocol")
        __version__ = "9.9.9"
        version = types.SimpleNamespace(cuda="13.0", hip=None)
        class _Cuda:
            @staticmethod
            def get_arch_list():
                return ["sm_90"]
            @staticmethod
            def is_available():
                os.kill(os.getpid(), signal.SIGSEGV)
        cuda = _Cuda()
        """),
    "segfault_in_live_check": textwrap.dedent("""\
        import os, signal, types
        __version__ = "9.9.9"
        version = types.SimpleNamespace(cuda=None, hip=None)
        cuda = types.SimpleNamespace(is_available=lambda: False, get_arch_list=lambda: [])
        def get_default_device():
            return "cpu"
        def Generator(device):
            os.kill(os.getpid(), signal.SIGSEGV)
        """),
}


def fake_torch(monkeypatch: pytest.MonkeyPatch, folder: Path, kind: str) -> None:
    """Put a fake ``torch`` package first on sys.path (the child inherits sys.path)."""
    pkg = folder / kind / "torch"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(FAKE_TORCHES[kind], encoding="utf-8")
    monkeypatch.syspath_prepend(str(pkg.parent))


def test_torch_segfaulting_on_import_is_an_import_error(monkeypatch, tmp_path) -> None:
    fake_torch(monkeypatch, tmp_path, "segfault_on_import")
    facts = torchenv.probe_torch(timeout_s=60)
    assert not facts.imported and facts.error is None
    assert facts.import_error == ("the torch probe crashed with SIGSEGV (signal 11) while "
                                  "importing torch")


def test_torch_calling_os_exit_on_import_keeps_its_last_words(monkeypatch, tmp_path) -> None:
    fake_torch(monkeypatch, tmp_path, "os_exit_on_import")
    facts = torchenv.probe_torch(timeout_s=60)
    assert not facts.imported
    assert facts.import_error == ("the torch probe exited with code 7 before reporting while "
                                  "importing torch (its last words: bye from torch)")


def test_the_child_closes_its_pipe_and_stderr_file(monkeypatch, tmp_path) -> None:
    """Under PYTHONWARNINGS=error an unclosed file printed 'Exception ignored ...
    ResourceWarning' into the doctor's output; the last words survive the close."""
    from devcheck.probe.torchproc import TorchChild

    fake_torch(monkeypatch, tmp_path, "os_exit_on_import")
    child = TorchChild(live=False)
    facts = child.run()
    assert "bye from torch" in (facts.import_error or "")
    assert child.proc is not None and child.proc.stdout is not None
    assert child.proc.stdout.closed and child._stderr.closed
    assert child.stderr_tail() == "bye from torch"


def test_torch_raising_on_import_is_reported_by_the_child(monkeypatch, tmp_path) -> None:
    fake_torch(monkeypatch, tmp_path, "raises_on_import")
    facts = torchenv.probe_torch(timeout_s=60)
    assert facts.import_error == "ImportError: libcudnn.so.9: cannot open shared object file"


def test_torch_crashing_while_asked_about_cuda(monkeypatch, tmp_path) -> None:
    fake_torch(monkeypatch, tmp_path, "segfault_in_cuda")
    facts = torchenv.probe_torch(timeout_s=60)
    assert facts.imported and facts.version == "9.9.9"
    assert facts.error == ("the torch probe crashed with SIGSEGV (signal 11) while querying "
                           "CUDA (initialising CUDA) (its last words: torch chatter on stdout "
                           "must not break the protocol)")  # torch's print went to stderr


def test_torch_crashing_in_a_live_check_fails_that_device(monkeypatch, tmp_path) -> None:
    fake_torch(monkeypatch, tmp_path, "segfault_in_live_check")
    facts = torchenv.probe_torch(timeout_s=60)
    assert facts.imported and facts.version == "9.9.9" and facts.error is None
    (check,) = facts.live_checks
    assert check.device == "cpu" and not check.ok
    assert check.error == ("the torch probe crashed with SIGSEGV (signal 11) during the live "
                           "check on cpu")


def test_a_hanging_torch_import_is_killed_at_the_deadline(monkeypatch, tmp_path) -> None:
    pkg = tmp_path / "torch"
    pkg.mkdir()
    started = tmp_path / "import-started"
    (pkg / "__init__.py").write_text(
        f"import pathlib, threading\npathlib.Path({str(started)!r}).touch()\n"
        "threading.Event().wait()\n")  # hangs for good
    monkeypatch.syspath_prepend(str(tmp_path))
    job = torchproc.torch_job(live=True)  # the child starts now
    (pid,) = job.pids
    child = psutil.Process(pid)
    for _ in range(2400):  # no race: wait (up to 2 minutes) until the import really hangs
        if started.exists():
            break
        assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
        psutil.wait_procs([child], timeout=0.05)
    assert started.exists(), "the child never reached `import torch`"
    from devcheck.probe.deadline import run_job

    facts = run_job(job, 0.5)
    assert facts.error == "torch probe timed out after 0.5s while importing torch"
    gone, alive = psutil.wait_procs([child], timeout=60)
    assert not alive, f"the hung child {pid} outlived its deadline"


def _events(*checks: str) -> list[dict]:
    facts = TorchFacts(imported=True, version="9.9.9").to_dict()
    out: list[dict] = [{"stage": "import"}, {"stage": "cuda", "version": "9.9.9"},
                       {"stage": "facts", "facts": facts}]
    for device in checks:
        out += [{"stage": "live", "device": device},
                {"stage": "check", "check": {"device": device, "ok": True, "seconds": 0.1,
                                             "max_abs_error": 0.0, "error": None}}]
    return out


def test_a_child_that_dies_after_all_its_checks_lost_nothing() -> None:
    child = torchproc.TorchChild(live=True)
    child.events = _events("cpu")
    facts = child.partial("the torch probe crashed with SIGSEGV (signal 11)", crashed=True)
    assert facts.error is None and [c.device for c in facts.live_checks] == ["cpu"]
    child.events = _events("cpu")[:-1]  # died inside the cpu check
    facts = child.partial("torch probe timed out after 5s")
    (check,) = facts.live_checks
    assert check.error == "torch probe timed out after 5s during the live check on cpu"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_child_dies_with_a_killed_doctor(tmp_path: Path) -> None:
    """A torch import that hangs kept the probe child alive after `kill -9` of the doctor."""
    import os
    import signal
    import subprocess
    import time

    pkg = tmp_path / "torch"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import time\ntime.sleep(600)\n")
    code = ("import sys, time\nsys.path.insert(0, sys.argv[1])\n"
            "from devcheck.probe.torchproc import TorchChild\n"
            "print(TorchChild(live=False).start(), flush=True)\ntime.sleep(600)\n")
    doctor = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    assert doctor.stdout is not None
    child = int(doctor.stdout.readline())
    time.sleep(1.0)  # the child is inside the hanging import
    doctor.kill()
    doctor.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        try:  # reaped by init, or a zombie of ours: either way not running
            with open(f"/proc/{child}/stat") as f:
                if f.read().split(") ")[1].startswith("Z"):
                    break
        except OSError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the torch probe child outlived the doctor")
