"""What `dagwatch console` serves: the Streamlit app (`app.py`) and the session routes.

`POST /api/session` (body: a token the login just issued) stores the login in an HttpOnly
cookie; `DELETE /api/session` removes it (logout). Streamlit's websocket cannot set a
cookie, so the page calls these routes from the browser; both refuse a request from
another origin, and the token is checked again before it becomes a cookie.
"""

from __future__ import annotations

import importlib
import os
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

import streamlit as st
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from console import sessions
from engine.config import Config, load_config
from engine.store.db import Store

SESSION_PATH = "/api/session"
QUERIES = Path(__file__).with_name("queries")


@lru_cache(maxsize=4)
def _store(url: str) -> Store:
    return Store(url)


def _same_origin(request: Request) -> bool:
    """A browser sends Origin with every POST/DELETE fetch: it must be this console."""
    origin = request.headers.get("origin")
    return origin is not None and urlsplit(origin).netloc == request.headers.get("host")


def _https(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "")
    return request.url.scheme == "https" or forwarded.split(",")[0].strip() == "https"


def _refusal(request: Request, config: Config) -> Response | None:
    if config["console.auth"] != "password":
        return PlainTextResponse("console.auth is not 'password'", status_code=404)
    if not _same_origin(request):
        return PlainTextResponse("refused: not from this console's origin", status_code=403)
    return None


async def start_session(request: Request) -> Response:
    """Keep a freshly issued login token in an HttpOnly cookie."""
    config = load_config(os.environ)
    refused = _refusal(request, config)
    if refused is not None:
        return refused
    token = (await request.body()).decode("ascii", "replace").strip()
    key = sessions.session_key(config)
    store = _store(config["database.sql_alchemy_conn"])
    if await run_in_threadpool(sessions.verify, store, key, token) is None:
        return PlainTextResponse("refused: not a valid session token", status_code=401)
    response = Response(status_code=204)
    response.set_cookie(
        sessions.COOKIE,
        token,
        max_age=sessions.expires_in(key, token),
        path="/",
        httponly=True,
        samesite="lax",
        secure=_https(request),
    )
    return response


async def end_session(request: Request) -> Response:
    """Forget the login cookie (logout)."""
    refused = _refusal(request, load_config(os.environ))
    if refused is not None:
        return refused
    response = Response(status_code=204)
    response.delete_cookie(sessions.COOKIE, path="/", httponly=True, samesite="lax")
    return response


def _warm_up() -> None:
    """Import what the pages use now, as the server starts, so that the first visitor
    does not wait for pandas, SQLAlchemy's models, Altair and the query modules."""
    for name in _PAGE_MODULES:
        importlib.import_module(name)


_PAGE_MODULES = (
    "console.auth",
    "console.ui",
    "console.charts",
    "console.alert_page",
    *(f"console.queries.{path.stem}" for path in QUERIES.glob("[a-z]*.py")),
)
_warm_up()

app = st.App(
    "app.py",
    routes=[
        Route(SESSION_PATH, start_session, methods=["POST"]),
        Route(SESSION_PATH, end_session, methods=["DELETE"]),
    ],
)
