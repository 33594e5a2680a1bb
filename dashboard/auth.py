"""Who is at the dashboard, so that acknowledgements, silences and corrections name a person.

Three modes, chosen by configuration:

- **OpenID Connect**: Streamlit's ``[auth]`` section in ``.streamlit/secrets.toml`` is set. Each
  analyst signs in with the identity provider (``st.login``) and every action is recorded under
  the e-mail address the provider vouches for (its name, or subject, when it sends no e-mail).
- **Shared password**: ``NEWSPULSE_DASHBOARD_PASSWORD`` is set. The sign-in form asks for the
  password and the analyst's name; the name is fixed for the browser session, so one person's
  actions cannot drift between names per click.
- **Open**: neither. Actions are recorded as ``anonymous``.

OIDC wins when both are configured: a verified identity is worth more than a shared secret.

The shared password is one secret for everyone, so guessing it is throttled per client
(:class:`SignInBackoff`): after a few wrong tries each further try from that address waits twice
as long as the one before, without a word about whether the guess would have been right.
"""

from __future__ import annotations

import hmac
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

import streamlit as st

from newspulse.settings import Settings

IDENTITY_KEY = "np_identity"
ANONYMOUS = "anonymous"


def oidc_providers() -> list[str] | None:
    """None without an ``[auth]`` secrets section; else its named providers (``[]``: the default).

    Named providers are the ``[auth.<name>]`` tables; a bare ``[auth]`` with ``client_id`` etc.
    is Streamlit's single default provider.
    """
    secrets = st.secrets
    if not secrets.load_if_toml_exists():
        return None
    section = secrets.get("auth")
    if not isinstance(section, Mapping) or not section:
        return None
    return [name for name, value in section.items() if isinstance(value, Mapping)]


def is_signed_in_with_oidc() -> bool:
    return bool(st.user.get("is_logged_in", False))


def identity() -> str:
    """The name the signed-in analyst's actions are recorded under."""
    if oidc_providers() is not None:
        if not is_signed_in_with_oidc():
            return ANONYMOUS
        return str(st.user.get("email") or st.user.get("name") or st.user.get("sub") or ANONYMOUS)
    return st.session_state.get(IDENTITY_KEY) or ANONYMOUS


def sign_in_gate(settings: Settings) -> bool:
    """True when this browser tab may see the dashboard; otherwise draws the sign-in page."""
    providers = oidc_providers()
    if providers is not None:
        return is_signed_in_with_oidc() or oidc_sign_in(providers)
    if settings.dashboard_password is not None:
        return bool(st.session_state.get(IDENTITY_KEY)) or password_sign_in(settings)
    return True


def oidc_sign_in(providers: list[str]) -> bool:
    """One button per identity provider; ``st.login`` redirects to it and back."""
    st.title("NewsPulse")
    st.caption("Sign in to see the dashboard. Your acknowledgements, silences and corrections carry your e-mail address.")
    for provider in providers or [None]:
        if st.button(f"Sign in with {provider}" if provider else "Sign in", key=f"np-login-{provider or 'default'}", type="primary"):
            if provider:
                st.login(provider)
            else:
                st.login()
    return False


class SignInBackoff:
    """Failed shared-password sign-ins per client, and how long each client must wait.

    The first :attr:`free_tries` failures cost nothing (typos); after that each failure doubles
    the wait before the next try is even checked (``base_s``, 2 × ``base_s`` … up to ``max_s``),
    so guessing a password costs hours instead of seconds while a colleague who mistypes twice
    never notices. A success forgets the client. At most ``max_clients`` are remembered (the
    longest-quiet ones are dropped), so a flood of addresses cannot exhaust memory.
    """

    def __init__(self, *, free_tries: int = 3, base_s: float = 1.0, max_s: float = 300.0, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free_tries, self.base_s, self.max_s, self.max_clients = free_tries, base_s, max_s, max_clients
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()  # client -> (failures, not before)

    def wait_s(self, client: str) -> float:
        """Seconds before ``client`` may try again (0: now)."""
        with self._lock:
            _, not_before = self._failures.get(client, (0, 0.0))
        return max(0.0, not_before - self.clock())

    def failed(self, client: str) -> None:
        with self._lock:
            failures = self._failures.pop(client, (0, 0.0))[0] + 1
            delay = 0.0 if failures < self.free_tries else min(self.max_s, self.base_s * 2 ** (failures - self.free_tries))
            self._failures[client] = (failures, self.clock() + delay)
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


@st.cache_resource(show_spinner=False)
def sign_in_backoff() -> SignInBackoff:
    """One throttle per dashboard process, shared by every browser session."""
    return SignInBackoff()


def client_key() -> str:
    """Who is trying to sign in: the client's address, or this browser session where Streamlit
    does not know it (a test run). Not a header the client could choose."""
    address = st.context.ip_address
    if isinstance(address, str) and address:
        return f"ip:{address}"
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return f"session:{ctx.session_id if ctx else ''}"


def password_sign_in(settings: Settings) -> bool:
    """The shared password (compared in constant time, throttled per client by
    :class:`SignInBackoff`) and the analyst's name for the session."""
    assert settings.dashboard_password is not None
    st.title("NewsPulse")
    with st.form("login"):
        name = st.text_input("Your name", help="Recorded with your acknowledgements, silences and corrections while this tab stays open.")
        given = st.text_input("Password", type="password")
        if st.form_submit_button("Sign in"):
            expected = settings.dashboard_password.get_secret_value()
            backoff, client = sign_in_backoff(), client_key()
            wait = backoff.wait_s(client)
            if wait > 0:
                st.error(f"Too many wrong passwords from here: try again in {math.ceil(wait)} s.")
            elif not hmac.compare_digest(given.encode(), expected.encode()):
                backoff.failed(client)
                st.error("Wrong password.")
            elif not name.strip():
                st.error("Enter your name: it is recorded with what you do here.")
            else:
                backoff.succeeded(client)
                st.session_state[IDENTITY_KEY] = " ".join(name.split())
                st.rerun()
    return False


def identity_sidebar(settings: Settings) -> None:
    """Who is signed in, and the way out."""
    from newspulse.dashboard.widgets import escape_md

    if oidc_providers() is not None:
        st.sidebar.caption(f"Signed in as {escape_md(identity())}")
        st.sidebar.button("Sign out", key="np-logout", on_click=st.logout)
    elif settings.dashboard_password is not None:
        st.sidebar.caption(f"Signed in as {escape_md(identity())} (shared password)")
        st.sidebar.button("Sign out", key="np-logout", on_click=lambda: st.session_state.pop(IDENTITY_KEY, None))
    else:
        st.sidebar.caption("No sign-in configured: actions are recorded as anonymous.")
