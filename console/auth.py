"""Who is using the console: no auth (loopback only), a password login, or OIDC."""

from __future__ import annotations

import getpass

import streamlit as st

from console import state
from console.users import User, authenticate, role_of


def _local_user() -> User:
    """Without auth the console is on loopback: its user is whoever runs it."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "local"
    return User(f"{name} (local)", "admin")


def _password_login() -> None:
    with st.form("login"):
        username = st.text_input("Username", key="login_username")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in")
    if submitted:
        user = authenticate(state.store(), username, password)
        if user is None:
            st.error("Wrong username or password.")
        else:
            st.session_state["user"] = user
            st.rerun()


def signed_in() -> User | None:
    """The session's user, or None when someone still has to log in (draws nothing)."""
    mode = state.settings().auth
    if mode == "none":
        return _local_user()
    if mode == "oidc":
        if not st.user.is_logged_in:
            return None
        name = str(st.user.get("email") or st.user.get("name") or "unknown")
        return User(name, role_of(state.store(), name))
    return st.session_state.get("user")


def draw_login() -> None:
    """The login: a password form, or the identity provider's button."""
    st.title("dagwatch")
    if state.settings().auth == "oidc":
        st.button("Log in", key="oidc_login", on_click=st.login)
    else:
        _password_login()


def current_user() -> User | None:
    """The logged-in user, or None after drawing the login (the page then stops)."""
    user = signed_in()
    if user is None:
        draw_login()
    return user


def logout() -> None:
    """Forget the session's user (and end the OIDC session)."""
    st.session_state.pop("user", None)
    if state.settings().auth == "oidc":
        st.logout()
