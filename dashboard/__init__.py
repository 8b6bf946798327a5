"""Glue between the Streamlit pages and finance_core: auth, cached data access, charts, widgets."""

# The sign-in page's off-screen chart that loads plotly early (charts.load_plotly_early); here,
# so that the bench and tests can name it without importing Streamlit's caches.
PLOTLY_WARM_UP_KEY = "plotly-warm-up"
