"""Who is using the console: no auth (loopback only), a password login, or OIDC."""

from __future__ import annotations

import getpass
import json

import streamlit as st

from console import sessions, state
from console.users import User, authenticate, role_of

#: session_state keys: the cookie call the browser still has to make, and "do not trust
#: the cookie this tab connected with" (after a logout, or when it was refused)
_COOKIE_CALL = "_session_cookie_call"
_COOKIE_REFUSED = "_session_cookie_refused"


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
            _remember(user)
            st.rerun()


def _remember(user: User) -> None:
    """Have the browser keep the login in a cookie (the next page run makes the call)."""
    config = state.config()
    try:
        token = sessions.issue(
            state.store(),
            sessions.session_key(config),
            user,
            hours=config["console.session_hours"],
        )
    except (LookupError, OSError):  # the user just vanished, or the key cannot be written
        return
    st.session_state[_COOKIE_CALL] = ("POST", token)
    st.session_state.pop(_COOKIE_REFUSED, None)


def _from_cookie() -> User | None:
    """The user of the session cookie this tab connected with, if it is still good."""
    token = st.context.cookies.get(sessions.COOKIE)
    if not token or st.session_state.get(_COOKIE_REFUSED):
        return None
    user = sessions.verify(state.store(), sessions.session_key(state.config()), token)
    if user is None:
        st.session_state[_COOKIE_REFUSED] = True  # tampered, expired or revoked
        return None
    st.session_state["user"] = user
    return user


def sync_cookie() -> None:
    """Make the pending cookie call (set after a login, delete after a logout) once.

    Streamlit's websocket cannot set cookies: a script in the page calls the console's
    session route (`console/server.py`), which sets or deletes the HttpOnly cookie.
    """
    pending = st.session_state.pop(_COOKIE_CALL, None)
    if pending is None:
        return
    method, body = pending
    call = (
        f"fetch('./api/session', {{method: {json.dumps(method)}, body: {json.dumps(body)}, "
        "credentials: 'same-origin'})"
    )
    st.html(f"<script>{call}</script>", unsafe_allow_javascript=True, width="content")


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
    return st.session_state.get("user") or _from_cookie()


def draw_login() -> None:
    """The login: a password form, or the identity provider's button."""
    st.title("dagwatch")
    sync_cookie()
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
    """Forget the session's user and its cookie (and end the OIDC session)."""
    st.session_state.pop("user", None)
    if state.settings().auth == "password":
        st.session_state[_COOKIE_CALL] = ("DELETE", "")
        st.session_state[_COOKIE_REFUSED] = True
    if state.settings().auth == "oidc":
        st.logout()
