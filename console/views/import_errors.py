"""`/imports`, the old address of the import errors: the Parsing page, which lists them."""

from __future__ import annotations

import streamlit as st

st.switch_page("views/parsing.py")
