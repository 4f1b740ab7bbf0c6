"""The console's entry point (`streamlit run console/app.py`): log in, then navigate."""

from __future__ import annotations

import streamlit as st

from console import auth

st.set_page_config(page_title="dagwatch", page_icon=":material/monitoring:", layout="wide")

pages = {
    "Operate": [
        st.Page(
            "views/overview.py", title="Overview", icon=":material/monitor_heart:", default=True
        ),
        st.Page("views/dags.py", title="DAGs", icon=":material/list:", url_path="dags"),
        st.Page("views/dag.py", title="DAG detail", icon=":material/account_tree:", url_path="dag"),
        # the links alerts carry (alerts.console_url + /runs?dag_id=...&run_id=...)
        st.Page("views/runs.py", title="Run", url_path="runs", visibility="hidden"),
    ],
    "Explain": [
        st.Page(
            "views/failures.py",
            title="Failures",
            icon=":material/error:",
            url_path="failures",
        ),
        st.Page(
            "views/tasks.py",
            title="Queued and running",
            icon=":material/pending:",
            url_path="tasks",
        ),
        st.Page(
            "views/why.py",
            title="Why isn't it running?",
            icon=":material/help:",
            url_path="why",
        ),
        st.Page(
            "views/slas.py", title="SLAs and deadlines", icon=":material/alarm:", url_path="slas"
        ),
        st.Page(
            "views/capacity.py",
            title="Pools and capacity",
            icon=":material/speed:",
            url_path="capacity",
        ),
        st.Page(
            "views/alerts.py",
            title="Alerts",
            icon=":material/outgoing_mail:",
            url_path="alerts",
        ),
        st.Page(
            "views/parsing.py",
            title="Parsing",
            icon=":material/broken_image:",
            url_path="parsing",
        ),
        # the old address of the import errors, now a section of Parsing
        st.Page(
            "views/import_errors.py", title="Import errors", url_path="imports", visibility="hidden"
        ),
        st.Page("views/audit.py", title="Audit log", icon=":material/history:", url_path="audit"),
    ],
    "Admin": [
        st.Page(
            "views/admin.py", title="Pools and variables", icon=":material/tune:", url_path="admin"
        ),
    ],
}
# navigation is declared before the login, so a deep link (/dag?dag_id=...) survives it
user = auth.signed_in()
navigation = st.navigation(pages, position="sidebar" if user else "hidden")
if user is None:
    auth.draw_login()
    st.stop()
st.session_state["current_user"] = user
with st.sidebar:
    auth.sync_cookie()
    st.caption(f"Signed in as **{user.name}** ({user.role})")
    if st.session_state.get("user") is not None and st.button("Log out", key="logout"):
        auth.logout()
        st.rerun()
navigation.run()
