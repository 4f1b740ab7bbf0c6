"""A password login survives a reload and a new tab (a signed HttpOnly cookie), in a real
browser against `dagwatch console`: an alert's deep link opens without a second login;
after logout, or with a tampered cookie, the login form is back."""

from __future__ import annotations

import pytest

from tests.console.helpers import http_ok, password_console_env, stop, wait_for
from tests.console.test_e2e_browser import _settle, browser  # noqa: F401 - a fixture
from tests.helpers import start_cli

COOKIE = "dagwatch_session"


@pytest.fixture
def console_url(cli_env, store, tmp_path):
    """`dagwatch console` with password auth and one operator, on the test's metastore."""
    env = password_console_env(cli_env, store)
    log = tmp_path / "console.log"
    with log.open("wb") as out:
        process = start_cli("console", env=env, stdout=out, stderr=out)
        try:
            url = f"http://127.0.0.1:{env['DAGWATCH__CONSOLE__PORT']}"
            wait_for(lambda: http_ok(f"{url}/_stcore/health"), what="the console to serve")
            yield url
        finally:
            stop(process)


def _login_form(page) -> bool:
    """Whether the page asks to log in (it waits until it shows either that or a page)."""
    form, signed_in = page.get_by_label("Username"), page.get_by_text("Signed in as")
    form.or_(signed_in).first.wait_for(timeout=60_000)
    _settle(page)
    return form.count() > 0


def _session_cookie(context) -> dict | None:
    return next((c for c in context.cookies() if c["name"] == COOKIE), None)


def test_a_login_survives_a_new_tab_until_logout_and_a_tampered_cookie_is_refused(
    console_url,
    browser,  # noqa: F811 - the fixture imported above
    tmp_path,
):
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    first = context.new_page()
    first.goto(f"{console_url}/dags")
    assert _login_form(first)
    first.get_by_label("Username").fill("sre")
    first.get_by_label("Password", exact=True).fill("n1ght-0wl")
    first.get_by_role("button", name="Log in").click()
    first.get_by_text("Signed in as").wait_for(timeout=60_000)
    wait_for(lambda: _session_cookie(context) is not None, what="the session cookie")
    cookie = _session_cookie(context)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["expires"] > 0
    assert first.evaluate("() => document.cookie").find(COOKIE) == -1  # scripts cannot read it

    deep = context.new_page()  # an alert's link, opened in a new tab
    deep.goto(f"{console_url}/runs?dag_id=nope&run_id=r1")
    assert not _login_form(deep)
    deep.get_by_text("Signed in as sre").wait_for(timeout=60_000)
    deep.get_by_text("There is no DAG 'nope'").wait_for(timeout=60_000)
    deep.screenshot(path=str(tmp_path / "deep_link_after_login.png"))
    deep.reload()
    assert not _login_form(deep)
    deep.get_by_text("Signed in as sre").wait_for(timeout=60_000)

    good = cookie["value"]
    version, payload, signature = good.split(".")
    forged_payload = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB")
    for tampered in (f"{version}.{forged_payload}.{signature}", good[:-3] + "xyz"):
        context.add_cookies([{**cookie, "value": tampered}])
        probe = context.new_page()
        probe.goto(f"{console_url}/dag?dag_id=nope")
        assert _login_form(probe), tampered
        probe.close()
    context.add_cookies([cookie])

    first.get_by_role("button", name="Log out").click()
    first.get_by_label("Username").wait_for(timeout=60_000)
    wait_for(lambda: _session_cookie(context) is None, what="the cookie to be removed")
    after = context.new_page()
    after.goto(f"{console_url}/dag?dag_id=nope")
    assert _login_form(after)
    context.close()


def test_the_session_route_refuses_other_origins_and_bad_tokens(console_url):
    import urllib.error
    import urllib.request

    def post(origin: str | None, body: bytes) -> int:
        request = urllib.request.Request(f"{console_url}/api/session", data=body, method="POST")
        if origin:
            request.add_header("Origin", origin)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    assert post(None, b"v1.e30.x") == 403
    assert post("http://evil.example", b"v1.e30.x") == 403
    assert post(console_url, b"v1.e30.x") == 401
