"""devcheck's pytest plugin: one test suite for CPU runners and GPU runners.

Installed with the package (``pytest11`` entry point ``devcheck``); without installing, load
it with ``-p no:devcheck -p devcheck.integrations.pytest_plugin`` (the ``no:`` keeps an
installed copy from registering the same module a second time under its entry-point name).

- ``device`` fixture: parametrizes a test over the devices that passed doctor's live check
  ("cpu" always, then "cuda:0", "cuda:1", ..., "mps"); the test id names the device.
- markers ``gpu`` / ``gpu(min_count=2)``, ``requires_cuda``, ``requires_mps``: skip with the
  reason doctor found ("Requires CUDA: no NVIDIA GPU on this machine: ..."), never a bare
  "no GPU".
- ``--devcheck-require cuda``: a GPU runner that lost its GPU fails before collecting
  anything, printing doctor's findings, instead of passing quietly on the CPU.
- ``--only-gpu`` / ``--only-cpu``: the runner picks its half of the suite.
- ``--devcheck-json FILE``: the availability, doctor's findings and the skips, as JSON
  (under pytest-xdist too: the skips travel with the workers' reports). A path that cannot
  be written is one line in the report; the run's exit code stays the tests' own.

Cost when unused: importing this module imports neither torch nor the NVML bindings.
Doctor's probe (torch imported in a child process, a live check: seconds) runs once per
session and only when something needs it: a collected test that asks for ``device``, a
marked test reaching set-up, or an option that asks (``--devcheck-require``,
``--only-gpu``, ``--devcheck-json``). Until then the header line is built from the torch
wheel's files and NVML (milliseconds, no torch); once the probe has run, it reports the
live result instead, and after collection a line names the devices the ``device`` fixture
runs on ("devcheck: device fixture: cpu, cuda:0").

The hooks live here; the pure decisions and texts (header lines, skip reasons, the gate's
message) live in :mod:`devcheck.integrations.pytest_devices`, the per-run state and the
JSON report in :mod:`devcheck.integrations.pytest_session`.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from devcheck.integrations.pytest_devices import (
    cheap_header_line,
    fixture_devices_line,
    gate_failure,
    header_line,
    min_count_of,
    no_gpu_reason,
    skip_reason,
)
from devcheck.integrations.pytest_session import (
    SKIP_PROPERTY,
    Session,
    SkipRecorder,
    write_json,
)

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
_SESSION = pytest.StashKey[Session]()


def _session(config: pytest.Config) -> Session:
    return config.stash[_SESSION]


# ---------------------------------------------------------------- header (no torch)


def _cheap_header() -> str:
    try:
        from devcheck.probe import nvml, wheel

        return cheap_header_line(wheel.probe_wheel(), nvml.probe_nvml(timeout_s=5.0))
    except Exception as exc:  # the header must never break a run
        return f"devcheck: devices not summarised ({type(exc).__name__}: {exc})"



# ---------------------------------------------------------------- hooks


def _seconds(text: str) -> float:
    """``--devcheck-timeout``: a finite number of seconds in (0, 3600] (nan/inf would hang or
    overflow the probe's wait)."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and 0 < value <= 3600):
        raise argparse.ArgumentTypeError(f"{text} is outside (0, 3600] seconds")
    return value


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
        "--devcheck-timeout", dest="devcheck_timeout", type=_seconds, default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS", help="time limit for doctor's probe, in (0, 3600] (default "
        "%(default)s)",
    )


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    if config.getoption("devcheck_only_gpu") and config.getoption("devcheck_only_cpu"):
        raise pytest.UsageError(
            "--only-gpu and --only-cpu were both given; pick one (--only-gpu on GPU runners, "
            "--only-cpu on CPU runners)"
        )
    state = Session(config)
    config.stash[_SESSION] = state
    config.pluginmanager.register(SkipRecorder(state), f"devcheck-skips-{id(config)}")


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = _session(config)
    if state.require or state.only_gpu or state.json_path is not None:
        state.availability()  # asked for by an option: the live result, once
    if state.probed:
        a = state.availability()
        only = " (--only-gpu)" if state.only_gpu else ""
        lines = [header_line(a, state.fixture_devices(a), only)]
        state.header_named_devices = True
    else:
        lines = [_cheap_header()]
    if state.json_error is not None:
        lines.append(f"devcheck: {state.json_error} (the tests run anyway)")
    return lines


def pytest_report_collectionfinish(config: pytest.Config) -> str | None:
    """After collection: the devices the ``device`` fixture really runs on."""
    state = _session(config)
    if not state.fixture_used or state.header_named_devices:
        return None
    if state.only_cpu:
        return fixture_devices_line(["cpu"], only="cpu")
    a = state.availability()
    return fixture_devices_line(state.fixture_devices(a),
                                only="gpu" if state.only_gpu else None,
                                reason=no_gpu_reason(a))


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
    write_json(state, exitstatus=int(pytest.ExitCode.TESTS_FAILED))
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
    state.fixture_used = True
    if state.only_cpu:
        params: list[Any] = [pytest.param("cpu", id="cpu")]
    else:
        a = state.availability()
        params = [pytest.param(d, id=d) for d in state.fixture_devices(a)]
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
            # Recorded on the report (user_properties travel from xdist workers to the
            # controller, which writes --devcheck-json), counted in pytest_runtest_logreport.
            item.user_properties.append(
                (SKIP_PROPERTY, {"nodeid": item.nodeid, "marker": mark.name, "reason": reason}))
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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(_SESSION, None)
    if state is not None:
        write_json(state, exitstatus=int(exitstatus))
