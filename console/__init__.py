"""The dagwatch operations console: a multipage Streamlit app over the metastore.

Queries live in `console.queries` (plain functions returning tables, no Streamlit);
pages in `console/views/` only call them and draw. Nothing imports this package.
"""
