"""Pools and variables: everyone sees them (secret values masked); admins change them."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from console import actions, state, ui
from engine.exceptions import DagwatchError

st.title("Pools and variables")
user = ui.user()
if not user.can_admin:
    st.caption("Changing pools and variables is for admins.")


def _do(action: Callable[[], str]) -> None:
    try:
        st.success(action())
    except DagwatchError as exc:
        st.error(str(exc))
    else:
        state.forget()


st.subheader("Pools")
st.dataframe(state.read("admin.pools"), hide_index=True)
with st.form("pool_form"):
    cols = st.columns([2, 1, 3])
    name = cols[0].text_input("Pool", key="pool_name")
    slots = int(cols[1].number_input("Slots", min_value=0, value=1, step=1, key="pool_slots"))
    description = cols[2].text_input("Description", key="pool_description")
    if st.form_submit_button("Set pool", disabled=not user.can_admin):
        _do(lambda: actions.set_pool(state.store(), user, name, slots, description))

st.subheader("Variables")
st.dataframe(state.variables(), hide_index=True)
with st.form("variable_form"):
    cols = st.columns([2, 3, 1])
    key = cols[0].text_input("Key", key="variable_key")
    value = cols[1].text_input("Value", type="password", key="variable_value")
    secret = cols[2].checkbox("Secret", key="variable_secret")
    if st.form_submit_button("Set variable", disabled=not user.can_admin):
        _do(
            lambda: actions.set_variable(state.store(), user, state.config(), key, value, secret),
        )
