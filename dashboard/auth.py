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
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

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
    """True when this session may see the dashboard; otherwise draws the sign-in page."""
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


def password_sign_in(settings: Settings) -> bool:
    """The shared password (compared in constant time) and the analyst's name for the session."""
    assert settings.dashboard_password is not None
    st.title("NewsPulse")
    with st.form("login"):
        name = st.text_input("Your name", help="Recorded with your acknowledgements, silences and corrections this session.")
        given = st.text_input("Password", type="password")
        if st.form_submit_button("Sign in"):
            expected = settings.dashboard_password.get_secret_value()
            if not hmac.compare_digest(given.encode(), expected.encode()):
                st.error("Wrong password.")
            elif not name.strip():
                st.error("Enter your name: it is recorded with what you do here.")
            else:
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
