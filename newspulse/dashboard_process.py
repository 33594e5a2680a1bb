"""The Streamlit server as a child process of `newspulse dashboard` and `newspulse demo`.

Supervision lives here, not in the command line, so the CLI only parses options and calls: this
module decides whether the dashboard may be served on the configured address, starts Streamlit
so that it dies with its parent, and stops it with a grace period.
"""

from __future__ import annotations

import ctypes
import importlib.util
import ipaddress
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

from newspulse.errors import ConfigError
from newspulse.settings import Settings
from newspulse.signals import stop_on_signals

#: The Streamlit script, found through the import system: ``dashboard/`` in a checkout,
#: ``site-packages/newspulse/dashboard/`` in a wheel (the package is not imported here).
DASHBOARD_APP = Path(importlib.util.find_spec("newspulse.dashboard").origin).parent / "app.py"


def check_dashboard_exposure(settings: Settings) -> None:
    """Refuse to serve the dashboard beyond this machine without a sign-in: its pages can
    acknowledge and silence alerts."""
    address = settings.dashboard_address
    try:
        loopback = address == "localhost" or ipaddress.ip_address(address).is_loopback
    except ValueError:
        loopback = False
    if not loopback and settings.dashboard_password is None and not _oidc_configured():
        raise ConfigError(
            f"NEWSPULSE_DASHBOARD_ADDRESS={address} would serve the dashboard beyond this machine without a sign-in; "
            "set NEWSPULSE_DASHBOARD_PASSWORD or OIDC (docs/dashboard.md), or keep the default 127.0.0.1 behind a reverse proxy"
        )


def _oidc_configured() -> bool:
    """Whether Streamlit's secrets (where it looks: ./.streamlit, ~/.streamlit) have an ``[auth]`` section."""
    for path in (Path.cwd() / ".streamlit" / "secrets.toml", Path.home() / ".streamlit" / "secrets.toml"):
        try:
            if "auth" in tomllib.loads(path.read_text(encoding="utf-8")):
                return True
        except (OSError, tomllib.TOMLDecodeError):
            continue
    return False


def start_dashboard(settings: Settings, port: int, quiet: bool = False) -> subprocess.Popen:
    """Start Streamlit as a child that dies with this process (Linux: parent-death signal), so a
    killed `newspulse dashboard` never leaves a server holding the port."""
    check_dashboard_exposure(settings)
    argv = [
        sys.executable, "-m", "streamlit", "run", str(DASHBOARD_APP),
        "--server.address", settings.dashboard_address, "--server.port", str(port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
        # Analysts view the app: no Deploy button, no developer menu (the operator runs the server).
        "--client.toolbarMode", "viewer",
    ]  # fmt: skip
    out = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(argv, stdout=out, stderr=out, env=os.environ.copy(), preexec_fn=_die_with_parent)


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to send SIGTERM when the parent dies (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_dashboard(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the Streamlit child, then SIGKILL it if it has not exited within ``grace_s``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def serve_dashboard(settings: Settings, port: int) -> int | None:
    """Serve until SIGINT/SIGTERM (which also stop Streamlit) or until Streamlit exits.

    Returns Streamlit's exit code when it ended on its own, None when a signal stopped it."""
    with stop_on_signals() as stop:
        proc = start_dashboard(settings, port)
        try:
            while proc.poll() is None and not stop.wait(0.5):
                pass
        finally:
            stop_dashboard(proc)
    return None if stop.is_set() else proc.returncode
