"""The results of the fault suite: one :class:`Outcome` per scenario, merged into
bench/results/faults.json, and what the scenarios share: :class:`ChildProcess`, the handle on
a NewsPulse command under test, :func:`wait_until` to wait on it, and :class:`SQLiteWriteLock`,
the store outage a second writer causes. Shared by bench/faults.py, bench/faults_crawler.py (R4)
and bench/faults_alerts.py (R6, R7), which all write the same file; kept apart from them so
none imports another's internals."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from provenance import cpu_model


class ChildProcess:
    """A command run as a child process in its own session, its output appended to ``log``;
    killed or stopped by PID, never by name."""

    #: What the command is, in messages and in a failed scenario's ``<role>_log_tail``.
    role = "command"
    #: How much of its log a failed scenario keeps.
    tail_lines = 40

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.argv, self.env, self.cwd, self.log = argv, env, cwd, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout_s: float = 120) -> int | None:
        """SIGTERM (the command finishes its work in hand and exits); SIGKILL if it does not
        exit in time. The exit code, or None when it had to be killed."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill9()
                return None
        return self.proc.returncode

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


@dataclass
class Outcome:
    """One scenario's verdict: passed or not, its figures and parameters, how long it ran."""

    name: str
    passed: bool
    figures: dict
    params: dict
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in self.figures.items() if not isinstance(v, (dict, list)))
        return f"{self.name:<22} {'PASS' if self.passed else 'FAIL'}  {shown}  ({self.seconds:.0f}s)"


def _fmt(v: object) -> str:
    return f"{v:.1f}" if isinstance(v, float) else str(v)


def failed_outcome(name: str, params: dict, err: BaseException, child: ChildProcess | None, figures: dict | None = None, seconds: float = 0.0) -> Outcome:
    """A scenario that raised: the figures it had, the error, and the end of its child's log."""
    figures = {**(figures or {}), "error": f"{type(err).__name__}: {err}"}
    if child is not None:
        figures[f"{child.role}_log_tail"] = child.tail(child.tail_lines)
    return Outcome(name, False, figures, params, seconds)


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, every_s: float = 1.0, child: ChildProcess | None = None) -> float:
    """Poll ``predicate``; return the seconds it took. Raise TimeoutError naming ``what`` after
    ``timeout_s``, or RuntimeError at once when ``child`` exits meanwhile."""
    t0 = time.monotonic()
    while not predicate():
        if child is not None and not child.alive:
            raise RuntimeError(f"the {child.role} exited while waiting for {what}")
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"{what}: not reached in {timeout_s:.0f}s")
        time.sleep(every_s)
    return time.monotonic() - t0


class SQLiteWriteLock:
    """The SQLite store made unwritable the way a second writer does it: another connection
    holds its write lock, so writes wait out their busy timeout and fail while reads go on
    (WAL). ``begin``/``end`` around an outage, or ``with`` around one step."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None

    def begin(self) -> None:
        self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.conn.execute("BEGIN EXCLUSIVE")

    def end(self) -> None:
        assert self.conn is not None
        self.conn.execute("ROLLBACK")
        self.conn.close()
        self.conn = None

    def __enter__(self) -> SQLiteWriteLock:
        self.begin()
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()


def machine() -> dict:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(), "host": platform.node()}


def write_results(path: Path, outcomes: list[Outcome], run_info: dict) -> None:
    """Merge into ``path``: scenarios run now replace their earlier results, others are kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_file = Path(tempfile.gettempdir()) / f"newspulse-faults-{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}.lock"
    with open(lock_file, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # runs side by side (R2's long outages beside R1) share the file
        _merge_results(path, outcomes, run_info)


def _merge_results(path: Path, outcomes: list[Outcome], run_info: dict) -> None:
    data = json.loads(path.read_text()) if path.exists() else {}
    kept = [s for s in data.get("scenarios", []) if s["name"] not in {o.name for o in outcomes}]
    fresh = [{"name": o.name, "passed": o.passed, "seconds": round(o.seconds, 1), "params": o.params, "figures": o.figures, **run_info} for o in outcomes]
    scenarios = sorted(kept + fresh, key=lambda s: s["name"])
    path.write_text(json.dumps({"suite": "bench/faults.py", "passed": all(s["passed"] for s in scenarios), "scenarios": scenarios}, indent=2, default=str) + "\n")
