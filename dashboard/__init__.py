"""Glue between the Streamlit pages and finance_core: auth, cached data access, charts, widgets."""
