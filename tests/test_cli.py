"""The command line as a user meets it: one version, one line per expected error (never a
traceback) with the exit code of its kind (docs/cli.md), one JSON document for --json, help that
works in any environment, read commands that write nothing, a dashboard on localhost that stops
with its Streamlit child, no import cycles."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from peers import free_port

import newspulse

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict, timeout: float = 120, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "newspulse.cli", *args], env=env, capture_output=True, text=True, timeout=timeout, input=stdin)


@pytest.fixture
def cli_env(np_env) -> dict:
    env = dict(os.environ)
    env["NEWSPULSE_STORE_URL"] = f"sqlite:///{np_env / 'cli.db'}"
    env["NEWSPULSE_MODEL_REGISTRY"] = str(np_env / "empty-registry")
    return env


def _one_clear_line(done: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert done.returncode == code, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    for needle in needles:
        assert needle in done.stderr, done.stderr[-2000:]


def test_version_has_one_source(cli_env):
    done = run_cli("--version", env=cli_env)
    assert done.returncode == 0 and done.stdout.strip() == f"newspulse {newspulse.__version__}"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'attr = "newspulse.__version__"' in pyproject


def test_missing_model_in_replay_is_one_line_not_a_traceback(cli_env, tmp_path):
    corpus = tmp_path / "news.csv"
    corpus.write_text("published_at,source,title,body,url,tickers\n2020-01-02T10:00:00Z,wire,Acme profit rises,,,\n")
    _one_clear_line(run_cli("replay", "--file", str(corpus), env=cli_env), 4, "newspulse replay:", "no production model")


def test_broken_input_file_is_reported_before_the_missing_model(cli_env, tmp_path):
    corpus = tmp_path / "news.csv"
    corpus.write_text("when,headline\n2020-01-02,Acme\n")
    done = run_cli("replay", "--file", str(corpus), env=cli_env)
    _one_clear_line(done, 2, "missing column")
    assert "production model" not in done.stderr


def test_missing_model_in_crawl_is_one_line(cli_env, tmp_path):
    feeds = tmp_path / "feeds.yaml"
    feeds.write_text(f"feeds:\n  - name: local\n    url: http://127.0.0.1:{free_port()}/rss\n")
    _one_clear_line(run_cli("crawl", "--feeds", str(feeds), "--once", "--state", str(tmp_path / "state.db"), env=cli_env), 4, "no production model")


def test_unreachable_elasticsearch_in_store_stats_is_one_line(cli_env):
    env = dict(cli_env, NEWSPULSE_STORE_URL=f"http://127.0.0.1:{free_port()}")
    _one_clear_line(run_cli("store", "stats", env=env), 1, "newspulse store", "unavailable")


def test_unknown_model_version_is_one_line(cli_env):
    _one_clear_line(run_cli("model", "evaluate", "--model-version", "v0", env=cli_env), 4, "no model version 'v0'")


def test_bad_setting_names_the_variable(cli_env):
    _one_clear_line(run_cli("store", "stats", env=dict(cli_env, NEWSPULSE_DASHBOARD_PORT="0")), 3, "NEWSPULSE_DASHBOARD_PORT")


def test_sub_apps_do_not_import_the_root_cli():
    """models/cli.py, ingest/cli.py and newspulse/alerts/cli.py share newspulse/console.py, not each other."""
    code = "import sys, newspulse.models.cli, newspulse.ingest.cli, newspulse.alerts.cli; bad = [m for m in ('newspulse.cli',) if m in sys.modules]; sys.exit(bool(bad))"
    assert subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT))).returncode == 0


def test_dashboard_refuses_every_interface_without_a_password(cli_env):
    """#18.8: only loopback is served without a sign-in."""
    done = run_cli("dashboard", "--port", str(free_port()), env=dict(cli_env, NEWSPULSE_DASHBOARD_ADDRESS="0.0.0.0"))
    _one_clear_line(done, 3, "NEWSPULSE_DASHBOARD_ADDRESS=0.0.0.0", "NEWSPULSE_DASHBOARD_PASSWORD")


def _listening_addresses(port: int) -> set[str]:
    """Local IPv4 addresses with a socket listening on ``port`` (Linux /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        host, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(host)[::-1]))
    return found


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_dashboard_sigterm_stops_streamlit_and_listens_on_localhost(cli_env):
    """#18.8 and #18.16: the default address is loopback, and SIGTERM leaves no Streamlit behind."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "newspulse.cli", "dashboard", "--port", str(port)], env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not _listening_addresses(port):
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "Streamlit did not start listening"
            time.sleep(0.3)
        assert _listening_addresses(port) == {"127.0.0.1"}
        children = _children(proc.pid)
        assert children, "Streamlit runs as a child process"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 15
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(c) for c in children), "Streamlit outlived `newspulse dashboard`"
        assert not _listening_addresses(port)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_demo_skips_what_an_earlier_run_stored(cli_env, trained_classifier_registry, tmp_path):
    """A second `newspulse demo` stores nothing again (one batched store query per chunk of
    rows); an invalid row is still dead-lettered with its reason."""
    import csv

    corpus = tmp_path / "news.csv"
    with corpus.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["published_at", "source", "title", "body", "url", "tickers"])
        for i in range(5):
            w.writerow([f"2024-01-0{i + 1}T10:00:00Z", "wire", f"Company {i} shares rise after results", "Profit beat estimates.", f"https://x.test/{i}", ""])
        w.writerow(["2024-01-07T10:00:00Z", "wire", "", "", "https://x.test/empty", ""])
    env = dict(cli_env, NEWSPULSE_MODEL_REGISTRY=str(trained_classifier_registry), NEWSPULSE_BATCH_MAX_WAIT_MS="20")
    runs = []
    for _ in range(2):
        done = run_cli("demo", "--no-serve", "--file", str(corpus), env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(json.loads(next(line for line in reversed(done.stderr.splitlines()) if line.startswith("{"))))
    first, second = runs
    assert (first["stored"], first["dead_lettered"], first["already_stored"]) == (5, 1, 0), first
    assert (second["stored"], second["dead_lettered"], second["already_stored"], second["received"]) == (0, 1, 5, 1), second
    assert second["store"]["articles"] == 5 and second["store"]["dead_letters"] == 2


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_demo_sigterm_during_replay_stops_without_claiming_the_replay_is_done(cli_env, trained_classifier_registry):
    """#18.16: a demo stopped mid-replay says it is stopping, not "Replay done; dashboard still at …",
    and takes its Streamlit child with it. (A short queue keeps the drain on close brief.)"""
    env = dict(cli_env, NEWSPULSE_MODEL_REGISTRY=str(trained_classifier_registry), NEWSPULSE_QUEUE_MAX_ITEMS="8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "newspulse.cli", "demo", "--port", str(free_port()), "--limit", "1000"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)  # never let the pipe fill
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any("Dashboard:" in line for line in lines):
            assert proc.poll() is None, "".join(lines)[-2000:]
            assert time.monotonic() < deadline, "the demo did not start"
            time.sleep(0.2)
        children = _children(proc.pid)
        assert children, "the dashboard runs as a child process"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=180) == 0, "".join(lines)[-2000:]
        reader.join(timeout=10)
        err = "".join(lines)
        assert "Replay done" not in err and "stopping" in err, err[-2000:]
        deadline = time.monotonic() + 15
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(c) for c in children), "Streamlit outlived `newspulse demo`"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_dashboard_on_every_interface_is_allowed_with_oidc(cli_env, tmp_path, monkeypatch):
    """OIDC (Streamlit's [auth] secrets) is a sign-in too: the exposure check lets it through."""
    from newspulse.dashboard_process import check_dashboard_exposure
    from newspulse.errors import NewsPulseError
    from newspulse.settings import load_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    settings = load_settings(dashboard_address="0.0.0.0")
    with pytest.raises(NewsPulseError, match="NEWSPULSE_DASHBOARD_PASSWORD"):
        check_dashboard_exposure(settings)
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "secrets.toml").write_text('[auth]\nredirect_uri = "http://localhost:8501/oauth2callback"\n')
    check_dashboard_exposure(settings)
    check_dashboard_exposure(load_settings(dashboard_address="::1"))


# --- the demo's pace (issue 28: alerts live while someone watches) ------------------------------
def _wire(*times: str) -> list[dict]:
    return [{"published_at": t, "title": f"story {i}"} for i, t in enumerate(times)]


def test_28_demo_replays_the_warm_rows_at_full_speed_then_paces_event_time():
    from newspulse.cli import DemoPace, pace_demo

    waits: list[float] = []
    flushed: list[int] = []
    out: list[dict] = []
    stories = _wire("1987-03-02T09:00:00", "1987-03-02T09:30:00", "1987-03-02T10:30:00", "1987-03-02T10:31:00", "1987-03-03T09:00:00", "not a time", "1987-03-03T09:02:00")
    for msg in pace_demo(stories, DemoPace(speed=60, warm_rows=2, max_gap_s=30), wait=lambda s: waits.append(s) or False, flush=lambda: flushed.append(len(out))):
        out.append(msg)
    assert out == stories, "every story, in order"
    # the first two at once; then 1 h / 60 = 60 s capped at 30, 1 min / 60 = 1 s, a night capped, none for a bad time, 2 min / 60
    assert waits == [30, 1, 30, 2]
    assert flushed == [2, 3, 4, 6], "what is held goes to the pipeline before each wait"


def test_28_demo_at_speed_zero_never_waits_and_a_stop_ends_the_stream():
    from newspulse.cli import DemoPace, pace_demo

    stories = _wire("1987-03-02T09:00:00", "1987-03-02T10:00:00", "1987-03-02T11:00:00")
    assert list(pace_demo(stories, DemoPace(0, 0, 30), wait=lambda s: pytest.fail("waited"), flush=lambda: None)) == stories
    stopped = list(pace_demo(stories, DemoPace(60, 0, 30), wait=lambda s: True, flush=lambda: None))
    assert stopped == stories[:1], "Ctrl-C during a wait ends the replay"


def test_28_the_dashboard_hides_streamlits_deploy_button_from_analysts(cli_env, monkeypatch):
    """Streamlit's toolbar in viewer mode: no Deploy button or developer menu for analysts."""
    import newspulse.dashboard_process as dashboard_process
    from newspulse.settings import load_settings

    started: list[list[str]] = []
    monkeypatch.setattr(dashboard_process.subprocess, "Popen", lambda argv, **kw: started.append(argv))
    dashboard_process.start_dashboard(load_settings(), 8599, quiet=True)
    [argv] = started
    assert argv[argv.index("--client.toolbarMode") + 1] == "viewer"
    from streamlit import config

    option = config.get_config_options()["client.toolbarMode"]  # a real option of the installed Streamlit
    assert "viewer" in option.description
