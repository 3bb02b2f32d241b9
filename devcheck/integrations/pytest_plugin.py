"""devcheck's pytest plugin: one test suite for CPU runners and GPU runners.

Installed with the package (``pytest11`` entry point ``devcheck``); without installing, load
it with ``-p no:devcheck -p devcheck.integrations.pytest_plugin`` (the ``no:`` keeps an
installed copy from registering the same module a second time under its entry-point name).

- ``device`` fixture: parametrizes a test over the devices that passed doctor's live check
  ("cpu" always, then "cuda:0", "cuda:1", ..., "mps"); the test id names the device.
- markers ``gpu`` / ``gpu(min_count=2)``, ``requires_cuda``, ``requires_mps``: skip with the
  reason doctor found ("Requires CUDA: no NVIDIA driver (...)"), never a bare "no GPU".
- ``--devcheck-require cuda``: a GPU runner that lost its GPU fails before collecting
  anything, printing doctor's findings, instead of passing quietly on the CPU.
- ``--only-gpu`` / ``--only-cpu``: the runner picks its half of the suite.
- ``--devcheck-json FILE``: the availability, doctor's findings and the skips, as JSON.

Cost when unused: importing this module imports neither torch nor pynvml. Doctor's probe
(torch import plus a live check, seconds) runs once per session and only when something
needs it: a collected test that asks for ``device``, a marked test reaching set-up, or an
option that asks (``--devcheck-require``, ``--only-gpu``, ``--devcheck-json``). Until then
the header line is built from the torch wheel's files and NVML (milliseconds, no torch);
once the probe has run, it reports the live result instead.

The hooks live here; the pure decisions and texts (header lines, skip reasons, the gate's
message) live in :mod:`devcheck.integrations.pytest_devices`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from devcheck.integrations.pytest_devices import (
    cheap_header_line,
    gate_failure,
    gpu_devices,
    header_line,
    min_count_of,
    no_gpu_reason,
    skip_reason,
)

if TYPE_CHECKING:
    from devcheck.facts import DeviceAvailability, DoctorFacts, Finding

MARKERS: dict[str, str] = {
    "gpu": "gpu(min_count=1): needs min_count usable GPUs (CUDA or MPS), else skips with "
    "the reason doctor found",
    "requires_cuda": "requires_cuda(min_count=1): needs min_count usable CUDA devices, else "
    "skips with the reason doctor found",
    "requires_mps": "requires_mps: needs a usable Apple MPS device, else skips with the reason "
    "doctor found",
}
GPU_MARKERS: tuple[str, ...] = tuple(MARKERS)
REQUIRE_CHOICES: tuple[str, ...] = ("cuda", "mps")
DEFAULT_TIMEOUT_S = 60.0


class _Session:
    """Per-run state, kept in ``config.stash`` (never in module globals).

    The module object is shared by every pytest run in a process (pytester's in-process
    runs included), so anything cached at module level would leak from one run into the
    next.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.require: str | None = config.getoption("devcheck_require")
        self.only_gpu: bool = bool(config.getoption("devcheck_only_gpu"))
        self.only_cpu: bool = bool(config.getoption("devcheck_only_cpu"))
        json_path = config.getoption("devcheck_json")
        self.json_path: Path | None = Path(json_path) if json_path else None
        self.timeout_s: float = float(config.getoption("devcheck_timeout"))
        self.skips: list[dict[str, str]] = []
        self.json_written = False
        self._availability: DeviceAvailability | None = None
        self.facts: DoctorFacts | None = None  # None until probed, or when the probe broke
        self.findings: list[Finding] = []
        self.probe_error: str | None = None

    @property
    def probed(self) -> bool:
        return self._availability is not None

    def availability(self) -> DeviceAvailability:
        """Doctor's verdict, probed on first use and kept for the session."""
        if self._availability is None:
            try:
                self._availability, self.facts, self.findings = _probe(self.timeout_s)
            except Exception as exc:  # doctor promises not to raise; a plugin must not break
                self.probe_error = f"{type(exc).__name__}: {exc}"
                self._availability = _fallback(self.probe_error)
        return self._availability

    def doctor_json(self) -> dict[str, Any]:
        """Doctor's own documented JSON document for the facts this run probed."""
        if self.facts is None:
            return {"error": self.probe_error or "not probed"}
        from devcheck.render import report

        return report.to_json(self.facts, self.findings, command="pytest")


_SESSION = pytest.StashKey[_Session]()


def _session(config: pytest.Config) -> _Session:
    return config.stash[_SESSION]


# ---------------------------------------------------------------- probing (lazy imports)


def _fallback(error: str) -> DeviceAvailability:
    """A probe that broke still leaves the CPU, and a reason that says what broke."""
    from devcheck.facts import DeviceAvailability

    reason = f"devcheck could not probe the devices ({error})"
    return DeviceAvailability(usable=("cpu",), cuda_reason=reason, mps_reason=reason)


def _probe(timeout_s: float) -> tuple[DeviceAvailability, DoctorFacts, list[Finding]]:
    """``doctor.device_availability`` spelled out, keeping the facts and findings it derives
    from (the gate prints the findings, ``--devcheck-json`` the facts): one probe for all."""
    from devcheck import doctor
    from devcheck.rules import diagnose

    facts = doctor.collect(live=True, timeout_s=timeout_s)
    assert facts.torch is not None, "collect() was asked for torch"
    availability = doctor.availability_from_facts(facts.nvml, facts.torch, facts.host)
    return availability, facts, diagnose.diagnose(facts)


# ---------------------------------------------------------------- header (no torch)


def _cheap_header() -> str:
    try:
        from devcheck.probe import nvml, wheel

        return cheap_header_line(wheel.probe_wheel(), nvml.probe_nvml(timeout_s=5.0))
    except Exception as exc:  # the header must never break a run
        return f"devcheck: devices not summarised ({type(exc).__name__}: {exc})"



# ---------------------------------------------------------------- hooks


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("devcheck", "devcheck: devices for tests (CPU and GPU runners)")
    group.addoption(
        "--devcheck-require", dest="devcheck_require", choices=REQUIRE_CHOICES, default=None,
        help="fail the whole run at start, with doctor's findings, unless a device of this "
        "kind passes doctor's live check (for GPU runners)",
    )
    group.addoption(
        "--only-gpu", dest="devcheck_only_gpu", action="store_true",
        help="run only GPU tests: those marked gpu/requires_cuda/requires_mps and the "
        "non-cpu instances of tests using the device fixture",
    )
    group.addoption(
        "--only-cpu", dest="devcheck_only_cpu", action="store_true",
        help="deselect GPU-marked tests and run the device fixture on cpu only (no probe)",
    )
    group.addoption(
        "--devcheck-json", dest="devcheck_json", metavar="FILE", default=None,
        help="write doctor's facts and findings, the device availability and the skips "
        "to FILE as JSON at the end of the run",
    )
    group.addoption(
        "--devcheck-timeout", dest="devcheck_timeout", type=float, default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS", help="time limit for doctor's probe (default %(default)s)",
    )


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    if config.getoption("devcheck_only_gpu") and config.getoption("devcheck_only_cpu"):
        raise pytest.UsageError(
            "--only-gpu and --only-cpu were both given; pick one (--only-gpu on GPU runners, "
            "--only-cpu on CPU runners)"
        )
    config.stash[_SESSION] = _Session(config)


def pytest_report_header(config: pytest.Config) -> str:
    state = _session(config)
    if state.require or state.only_gpu or state.json_path is not None:
        state.availability()  # asked for by an option: the live result, once
    return header_line(state.availability()) if state.probed else _cheap_header()


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session: pytest.Session) -> None:
    """The gate: before anything is collected, so a GPU runner without a GPU stops at once."""
    state = _session(session.config)
    if not state.require:
        return
    lines = gate_failure(state.require, state.availability(), state.findings)
    if lines is None:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        for line in lines:
            reporter.write_line(line, red=line.startswith("devcheck:"))
    else:
        sys.stderr.write("\n".join(lines) + "\n")
    a = state.availability()
    reason = a.cuda_reason if state.require == "cuda" else a.mps_reason
    _write_json(state, exitstatus=int(pytest.ExitCode.TESTS_FAILED))
    pytest.exit(
        f"devcheck: --devcheck-require {state.require} failed: {reason or 'no usable device'}",
        returncode=pytest.ExitCode.TESTS_FAILED,
    )


def _own_device_fixture(metafunc: pytest.Metafunc) -> bool:
    """True when ``device`` resolves to this plugin's fixture (not a project's own)."""
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",")]
        if "device" in names:
            return False  # the test parametrizes device itself
    defs = getattr(metafunc, "_arg2fixturedefs", {}).get("device")
    if not defs:
        return True
    func = getattr(defs[-1], "func", None)
    func = getattr(func, "__wrapped__", func)
    return getattr(func, "__module__", __name__) == __name__


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "device" not in metafunc.fixturenames or not _own_device_fixture(metafunc):
        return
    state = _session(metafunc.config)
    if state.only_cpu:
        params: list[Any] = [pytest.param("cpu", id="cpu")]
    else:
        a = state.availability()
        devices = gpu_devices(a) if state.only_gpu else list(a.usable)
        params = [pytest.param(d, id=d) for d in devices]
        if not params:  # --only-gpu and no GPU: one visible skip, with doctor's reason
            kind = "mps" if sys.platform == "darwin" else "cuda"
            reason = f"Requires a GPU: {no_gpu_reason(a)}"
            params = [pytest.param(kind, id=kind, marks=pytest.mark.skip(reason=reason))]
    metafunc.parametrize("device", params, indirect=True)


def _is_gpu_item(item: pytest.Item) -> bool:
    if any(item.get_closest_marker(name) for name in GPU_MARKERS):
        return True
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("device", "cpu") != "cpu"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = _session(config)
    if not (state.only_gpu or state.only_cpu):
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        (keep if _is_gpu_item(item) == state.only_gpu else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    marks = [m for name in GPU_MARKERS if (m := item.get_closest_marker(name)) is not None]
    if not marks:
        return
    state = _session(item.config)
    for mark in marks:
        try:
            count = min_count_of(mark)
        except ValueError as exc:
            pytest.fail(str(exc), pytrace=False)
        reason = skip_reason(mark.name, count, state.availability())
        if reason is not None:
            state.skips.append({"nodeid": item.nodeid, "marker": mark.name, "reason": reason})
            _skip_at_item(reason)


def _skip_at_item(reason: str) -> None:
    """Skip, reported at the test's own location (as ``skipif`` does), not at this file."""
    try:
        exc = pytest.skip.Exception(reason, _use_item_location=True)
    except TypeError:  # pragma: no cover - pytest without the keyword
        exc = pytest.skip.Exception(reason)
    raise exc


@pytest.fixture
def device(request: pytest.FixtureRequest) -> str:
    """A device that passed doctor's live check: "cpu", "cuda:N" or "mps".

    Tests asking for it run once per usable device (ids ``[cpu]``, ``[cuda:0]``, ...). It is
    a string, so ``torch.ones(3, device=device)`` works and the fixture needs no torch.
    Function-scoped, like the tests it parametrizes.
    """
    return str(getattr(request, "param", "cpu"))


def _write_json(state: _Session, *, exitstatus: int) -> None:
    if state.json_path is None or state.json_written:
        return
    if hasattr(state.config, "workerinput"):  # pytest-xdist worker: the controller writes
        return
    availability = state.availability()
    from devcheck import __version__

    payload: dict[str, Any] = {
        "schema": "devcheck.pytest/1",
        "devcheck_version": __version__,
        "exitstatus": exitstatus,
        "require": state.require,
        "only": "gpu" if state.only_gpu else "cpu" if state.only_cpu else None,
        "header": header_line(availability),
        "availability": availability.to_dict(),
        "skips": state.skips,
        "doctor": state.doctor_json(),
    }
    state.json_path.parent.mkdir(parents=True, exist_ok=True)
    from devcheck.render import report  # strict JSON: a GPU's NaN result becomes null

    state.json_path.write_text(report.render_json(payload) + "\n", encoding="utf-8")
    state.json_written = True


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(_SESSION, None)
    if state is not None:
        _write_json(state, exitstatus=int(exitstatus))

