"""The hostile audit's engine: run one case as a user would type it, and judge it.

A case is a bash script, so that what users really do can be written as they do it:
``cmd >&-``, ``cmd <&-``, ``cmd | head -1``, ``ulimit -f 50; exec cmd``, a tiny private
tmpfs for a full disk, a read-only mount, ``setpriv`` to drop root. Placeholders: ``{py}``
(the venv's python), ``{dc}`` (the ``devcheck`` console script), ``{sm}`` (``{py} -m
softmax``), ``{tmp}`` (the case's own folder, also its working directory), ``{data}`` (a
folder holding FashionMNIST/raw), ``{repo}``, ``{tests}``.

Judgement, the same for every case (what the issue's acceptance counts):
- **traceback**: a Python traceback, pytest INTERNALERROR, ``Exception ignored in`` or
  ``Fatal Python error`` in the output; with ``child_traceback`` (the user's own program
  crashed, under ``devcheck run``) only tracebacks with a frame inside devcheck/ or softmax/
  count; with ``crash_dump`` (a process that must die by a fatal signal: a torch whose
  import segfaults inside the trainer) faulthandler's dump is the expected message and is
  judged by the case's check;
- **orphan**: a process carrying the case's tag in its environment still alive 5 s after
  the case's script ended (they are killed after being counted);
- **hang**: the case ran past its timeout;
- **exit**: an exit status the case does not allow;
- **silent**: a non-zero exit with nothing on stderr (when stderr is open);
- **loss**, **wrong**, **message**: the case's own check (a file that must survive, a
  figure that must be right, an error that must name the thing).
- **setup**: the case's setup raised; the script still runs and is judged as above, the
  case's check is skipped (it would judge a case that was never set up).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TAG_VAR = "DEVCHECK_AUDIT_TAG"
ORPHAN_GRACE_S = 5.0
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^INTERNALERROR|"
                        r"Exception ignored in|Fatal Python error", re.M)
_FRAME = re.compile(r'^\s*File "([^"]+)", line \d+', re.M)


@dataclass(frozen=True)
class Env:
    """Where things are; shared by every case."""

    py: str
    dc: str
    data: str
    repo: str = str(REPO)
    tests: str = str(REPO / "tests")

    @property
    def sm(self) -> str:
        return f"{self.py} -m softmax"


@dataclass
class Ran:
    """What a case's check may look at."""

    tmp: Path
    rc: int | None
    out: str
    err: str
    seconds: float
    memo: dict[str, object] = field(default_factory=dict)  # what setup remembered

    @property
    def text(self) -> str:
        return self.out + self.err


Check = Callable[[Ran], "str | None"]
Setup = Callable[[Path, Env, dict[str, object]], None]


@dataclass(frozen=True)
class Case:
    id: str
    group: str
    script: str
    exit: str = "!0"  # "0", "!0", "any", or codes "1,2"
    timeout: float = 120.0
    setup: Setup | None = None
    check: Check | None = None
    signal: tuple[int, float | str] | None = None  # (SIGINT, seconds or text to wait for)
    signal_to: str = "group"  # "group" (Ctrl-C at a terminal) or "main" (kill PID)
    child_traceback: bool = False
    crash_dump: bool = False  # a fatal signal is the expected end: faulthandler's dump is the
    #                           message (judged by ``check``), not a traceback of ours
    stdin: str | None = ""  # None: inherit nothing (/dev/null); "" empty; text
    exclusive: bool = False  # timing-sensitive: run alone, after the parallel ones
    note: str = ""


@dataclass(frozen=True)
class Result:
    id: str
    group: str
    rc: int | None
    seconds: float
    problems: tuple[str, ...]
    message: str
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


def exit_ok(spec: str, rc: int | None) -> bool:
    if rc is None:
        return False
    if spec == "any":
        return True
    if spec == "0":
        return rc == 0
    if spec == "!0":
        return rc != 0
    return rc in {int(x) for x in spec.split(",")}


def tracebacks(text: str, child_traceback: bool) -> list[str]:
    """Each offending block's first line (with its innermost devcheck/softmax frame)."""
    found = []
    for m in _TRACEBACK.finditer(text):
        block = text[m.start():m.start() + 20000]
        end = re.search(r"^\S.*(?:Error|Exception|Interrupt|Exit)\b.*$", block[1:], re.M)
        block = block[: end.end() + 1] if end else block[:4000]
        ours = [f for f in _FRAME.findall(block)
                if "/devcheck/" in f or "/softmax/" in f]
        if child_traceback and not ours:
            continue
        last = block.strip().splitlines()[-1][:160] if block.strip() else ""
        where = f" at {ours[-1]}" if ours else ""
        found.append(f"{m.group(0)}: {last}{where}")
    return found


def _tagged(tag: str) -> list[tuple[int, str]]:
    needle = f"{TAG_VAR}={tag}".encode()
    procs = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        procs.append((int(entry), cmd[:120]))
    return procs


def orphans(tag: str, grace_s: float = ORPHAN_GRACE_S) -> list[str]:
    deadline = time.monotonic() + grace_s
    left = _tagged(tag)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _tagged(tag)
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return [f"pid {pid}: {cmd}" for pid, cmd in left]


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _wait_for(text: str, files: list[Path], proc: subprocess.Popen[bytes],
              deadline: float) -> bool:
    while time.monotonic() < deadline and proc.poll() is None:
        if any(text in _read(f) for f in files):
            return True
        time.sleep(0.05)
    return False


def run_case(case: Case, env: Env, root: Path) -> Result:
    tmp = root / re.sub(r"[^A-Za-z0-9_.-]", "_", case.id)
    if tmp.exists():  # a rerun into the same --out starts from an empty folder
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    tmp.mkdir(parents=True, exist_ok=True)
    memo: dict[str, object] = {}
    problems: list[str] = []
    setup_failed = False
    if case.setup is not None:
        try:
            case.setup(tmp, env, memo)
        except Exception as exc:  # the case's own setup broke: say so, run it, skip the check
            problems.append(f"setup: {type(exc).__name__}: {exc}")
            setup_failed = True
    script = case.script.format(py=env.py, dc=env.dc, sm=env.sm, tmp=tmp, data=env.data,
                                repo=env.repo, tests=env.tests)
    tag = uuid.uuid4().hex
    penv = dict(os.environ, **{TAG_VAR: tag, "PYTHONDONTWRITEBYTECODE": "1"})
    penv.pop("SOFTMAX_DATA_ROOT", None)
    out_f, err_f = tmp / "_stdout", tmp / "_stderr"
    t0 = time.monotonic()
    with open(out_f, "wb") as out, open(err_f, "wb") as err:
        stdin = subprocess.DEVNULL if case.stdin is None else subprocess.PIPE
        proc = subprocess.Popen(["bash", "-c", script], cwd=tmp, env=penv, stdin=stdin,
                                stdout=out, stderr=err, start_new_session=True)
        if case.stdin is not None and proc.stdin is not None:
            try:
                proc.stdin.write(case.stdin.encode())
                proc.stdin.close()
            except OSError:
                pass
        deadline = t0 + case.timeout
        if case.signal is not None:
            sig, when = case.signal
            if isinstance(when, str):
                if not _wait_for(when, [out_f, err_f], proc, deadline):
                    problems.append(f"signal: {when!r} never appeared before the "
                                    f"{'end' if proc.poll() is not None else 'timeout'}")
            else:
                time.sleep(max(0.0, min(when, deadline - time.monotonic())))
            if proc.poll() is None:
                try:
                    if case.signal_to == "group":
                        os.killpg(proc.pid, sig)
                    else:
                        os.kill(proc.pid, sig)
                except OSError:
                    pass
        try:
            rc: int | None = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            rc = None
            problems.append(f"hang: still running after {case.timeout:g} s")
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
    seconds = time.monotonic() - t0
    left = orphans(tag)
    if left:
        problems.append(f"orphan: {len(left)} left: " + "; ".join(left[:3]))
    out_s, err_s = _read(out_f), _read(err_f)
    if rc is not None and not exit_ok(case.exit, rc):
        problems.append(f"exit: {rc}, expected {case.exit}")
    for tb in tracebacks(out_s + "\n" + err_s, case.child_traceback):
        if case.crash_dump and tb.startswith("Fatal Python error"):
            continue
        problems.append(f"traceback: {tb}")
    if rc not in (None, 0) and not err_s.strip() and not out_s.strip() and case.signal is None:
        problems.append("silent: failed with no message at all")
    if case.check is not None and rc is not None and not setup_failed:
        try:
            verdict = case.check(Ran(tmp, rc, out_s, err_s, seconds, memo))
        except Exception as exc:  # a broken check is the audit's bug: say so, go on
            verdict = f"check crashed: {type(exc).__name__}: {exc}"
        if verdict:
            problems.append(verdict)
    message = next((ln.strip() for ln in reversed(err_s.splitlines()) if ln.strip()),
                   next((ln.strip() for ln in reversed(out_s.splitlines()) if ln.strip()), ""))
    return Result(case.id, case.group, rc, round(seconds, 2), tuple(problems), message[:200],
                  case.note)


# --- helpers for cases -------------------------------------------------------------------

def sha(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def error_names(*words: str) -> Check:
    """The error must mention every word (case-insensitive): the thing, the value, the fix."""
    def check(r: Ran) -> str | None:
        low = r.err.lower() + r.out.lower()
        missing = [w for w in words if w.lower() not in low]
        return f"message: does not name {', '.join(missing)}" if missing else None
    return check


def all_of(*checks: Check) -> Check:
    def check(r: Ran) -> str | None:
        for c in checks:
            v = c(r)
            if v:
                return v
        return None
    return check


def unchanged(name: str) -> Check:
    """A file that setup remembered (memo[name] = its sha) must survive byte for byte."""
    def check(r: Ran) -> str | None:
        now = sha(r.tmp / name)
        if now != r.memo.get(name):
            return f"loss: {name} was {'removed' if now is None else 'changed'}"
        return None
    return check


def no_temporaries(r: Ran) -> str | None:
    left = [p.name for p in r.tmp.rglob("*") if ".tmp" in p.name and p.is_file()]
    return f"loss: temporaries left behind: {', '.join(sorted(left)[:4])}" if left else None


def one_line_error(r: Ran) -> str | None:
    """A usage or input error: at most 3 lines (click's usage block), the last one saying it."""
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    if len(lines) > 3:
        return f"message: {len(lines)} lines of error output (expected one)"
    return None


def not_in_output(*words: str, kind: str = "wrong") -> Check:
    """None of ``words`` may appear in the output (case-insensitive): a claim that would be
    false, or a wording that blames the wrong thing; ``kind`` is the problem's kind."""
    def check(r: Ran) -> str | None:
        low = r.text.lower()
        found = [w for w in words if w.lower() in low]
        return f"{kind}: output says {', '.join(map(repr, found))}" if found else None
    return check


def names_any(*words: str, stderr_only: bool = False) -> Check:
    """The output (with ``stderr_only``: stderr) mentions at least one of ``words``
    (case-insensitive; equivalent wordings)."""
    def check(r: Ran) -> str | None:
        low = (r.err if stderr_only else r.text).lower()
        return None if any(w.lower() in low for w in words) else \
            f"message: names none of {', '.join(map(repr, words))}"
    return check


def json_doc(*words: str) -> Check:
    """stdout is one JSON document, and it names every word (case-insensitive)."""
    def check(r: Ran) -> str | None:
        try:
            doc = json.loads(r.out)
        except ValueError as exc:
            return f"wrong: stdout is not one JSON document ({exc}; {len(r.out)} chars)"
        text = json.dumps(doc).lower()
        missing = [w for w in words if w.lower() not in text]
        return f"message: the JSON does not name {', '.join(missing)}" if missing else None
    return check


def json_lines(at_least: int = 0, exactly: int | None = None,
               count_kind: str = "wrong") -> Check:
    """Every non-empty stdout line is one JSON document (none cut), and there are at least
    ``at_least`` of them (or ``exactly`` so many); ``count_kind``: the problem's kind when
    the count is off (no frame at all is a ``loss`` for a stream that must have one)."""
    def check(r: Ran) -> str | None:
        lines = [ln for ln in r.out.splitlines() if ln.strip()]
        for ln in lines:
            try:
                json.loads(ln)
            except ValueError:
                return f"wrong: a stdout line is not JSON (cut?): {ln[:100]!r}"
        if exactly is not None and len(lines) != exactly:
            return f"{count_kind}: {len(lines)} JSON lines on stdout, expected {exactly}"
        if len(lines) < at_least:
            return f"{count_kind}: {len(lines)} JSON lines on stdout, expected at least " \
                   f"{at_least}"
        return None
    return check


def took_at_most(limit_s: float, kind: str = "wrong") -> Check:
    def check(r: Ran) -> str | None:
        return None if r.seconds <= limit_s else \
            f"{kind}: took {r.seconds:.1f} s, expected at most {limit_s:g} s"
    return check


def exists(*names: str, nonempty: bool = False, link_ok: bool = False) -> Check:
    """Each of ``names`` (relative to the case's folder) was written: it exists, following
    symlinks; with ``link_ok`` a symlink counts even when dangling; with ``nonempty`` it is
    a regular file holding at least one byte."""
    def there(p: Path) -> bool:
        if nonempty:
            return p.is_file() and p.stat().st_size > 0
        return os.path.lexists(p) if link_ok else p.exists()

    def check(r: Ran) -> str | None:
        missing = [n for n in names if not there(r.tmp / n)]
        return f"loss: {', '.join(missing)} not written" if missing else None
    return check


def chain(*setups: Setup) -> Setup:
    """One setup running each of ``setups`` in turn."""
    def setup(tmp: Path, env: Env, memo: dict[str, object]) -> None:
        for s in setups:
            s(tmp, env, memo)
    return setup


ONE_GPU = "mod = fk.build_module(fk.one_gpu())\n"
_PYNVML = """\
import sys, time, types
sys.path.insert(0, {tests!r})
from fakes import fake_pynvml as fk
GiB = 1024**3
T0 = time.monotonic()
{body}
sys.modules["pynvml"] = mod
"""


def fake_pynvml(body: str = ONE_GPU, folder: str = "shim") -> Setup:
    """Setup: ``{tmp}/<folder>/pynvml.py``, a shim over tests/fakes/fake_pynvml.py, to put
    first on PYTHONPATH. ``body`` is Python that binds ``mod`` (the module to install)
    with ``fk`` (the fakes), ``GiB``, ``T0`` (the import time), ``time`` and ``types`` at
    hand; it may also raise instead, as a broken pynvml does on import."""
    def setup(tmp: Path, env: Env, memo: dict[str, object]) -> None:
        (tmp / folder).mkdir(exist_ok=True)
        (tmp / folder / "pynvml.py").write_text(_PYNVML.format(tests=env.tests, body=body),
                                                encoding="utf-8")
    return setup


def python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable
