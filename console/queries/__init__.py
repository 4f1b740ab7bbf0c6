"""The console's reads: plain functions of a store (and a clock) that return tables.

No Streamlit here, so every query is tested on its own against a seeded metastore. Each
reads at most what a page shows: counts through indexes, the newest N rows, one page.
"""
