"""The pytest plugin's per-run state: doctor's probe (once), the skips, the JSON report.

Kept apart from the hooks (:mod:`devcheck.integrations.pytest_plugin`); imports neither
torch nor the NVML bindings until something asks for the devices.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from devcheck.integrations.pytest_devices import gpu_devices, header_line

if TYPE_CHECKING:
    from devcheck.facts import DeviceAvailability, DoctorFacts, Finding

JSON_SCHEMA = "devcheck.pytest/2"  # 2: availability.cuda_runtime is now cuda_version
SKIP_PROPERTY = "devcheck_skip"  # user_properties key of a skip devcheck decided


class Session:
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
        self.json_error: str | None = self._check_json_path()
        self.fixture_used = False
        self.header_named_devices = False
        self._availability: DeviceAvailability | None = None
        self.facts: DoctorFacts | None = None  # None until probed, or when the probe broke
        self.findings: list[Finding] = []
        self.probe_error: str | None = None

    def fixture_devices(self, a: DeviceAvailability) -> list[str]:
        """The devices the ``device`` fixture runs on in this run."""
        if self.only_cpu:
            return ["cpu"]
        return gpu_devices(a) if self.only_gpu else list(a.usable)

    def _check_json_path(self) -> str | None:
        """Why ``--devcheck-json`` cannot be written (checked before the tests run)."""
        if self.json_path is None:
            return None
        from devcheck.fileio import OutputError, check_writable

        try:
            check_writable(self.json_path, "--devcheck-json report")
        except OutputError as exc:
            return str(exc)
        return None

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
        from devcheck.render.json import to_json

        return to_json(self.facts, self.findings, command="pytest")


# ---------------------------------------------------------------- probing (lazy imports)


def _fallback(error: str) -> DeviceAvailability:
    """A probe that broke still leaves the CPU, and a reason that says what broke."""
    from devcheck.facts import DeviceAvailability

    reason = f"devcheck could not probe the devices ({error})"
    return DeviceAvailability(usable=("cpu",), cuda_reason=reason, mps_reason=reason)


def _probe(timeout_s: float) -> tuple[DeviceAvailability, DoctorFacts, list[Finding]]:
    """Doctor's one run: the availability and the facts and findings it was drawn from (the
    gate prints the findings, ``--devcheck-json`` the facts); diagnosed once."""
    from devcheck.checkup import run

    result = run(live=True, timeout_s=timeout_s, isolate=True)
    return result.availability, result.facts, list(result.findings)


class SkipRecorder:
    """Collects devcheck's skips from the test reports, wherever the tests ran.

    A per-run plugin object (registered in ``pytest_configure``) because the hook gets no
    config; under pytest-xdist the controller sees every worker's reports here.
    """

    def __init__(self, state: Session) -> None:
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "setup" and report.skipped:
            for name, value in report.user_properties:
                if name == SKIP_PROPERTY and isinstance(value, dict):
                    self.state.skips.append({str(k): str(v) for k, v in value.items()})


def write_json(state: Session, *, exitstatus: int) -> None:
    """Write ``--devcheck-json``; a path that cannot be written is one line, never a crash."""
    if state.json_path is None or state.json_written:
        return
    if hasattr(state.config, "workerinput"):  # pytest-xdist worker: the controller writes
        return
    state.json_written = True
    availability = state.availability()
    from devcheck import __version__
    from devcheck.fileio import atomic_write_text, check_writable, describe_os_error
    from devcheck.render.json import render_json  # strict JSON: a GPU's NaN becomes null

    payload: dict[str, Any] = {
        "schema": JSON_SCHEMA,
        "devcheck_version": __version__,
        "exitstatus": exitstatus,
        "require": state.require,
        "only": "gpu" if state.only_gpu else "cpu" if state.only_cpu else None,
        "header": header_line(availability, state.fixture_devices(availability)),
        "availability": availability.to_dict(),
        "skips": state.skips,
        "doctor": state.doctor_json(),
    }
    what = "--devcheck-json report"
    try:
        check_writable(state.json_path, what)  # creates no directory: a typo stays a typo
        atomic_write_text(state.json_path, render_json(payload) + "\n", what)
    except OSError as exc:  # fileio.OutputError names the file; /dev/full raises plainly
        text = str(exc) if hasattr(exc, "fix") else (
            f"cannot write {what} {state.json_path}: {describe_os_error(exc)}; choose "
            "another path")
        say(state.config, f"devcheck: {text}")


def say(config: pytest.Config, line: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(line, red=True)
    else:
        sys.stderr.write(line + "\n")
