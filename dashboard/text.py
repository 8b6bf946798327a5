"""Escaping that keeps Stripe- and form-derived text shown as text in markdown, links and charts."""

from __future__ import annotations

import html
import re
from urllib.parse import quote, urlsplit

# Every character Streamlit's markdown (CommonMark + GFM + its own directives) gives meaning to.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]()#+\-.!|<>{}~:$])")
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029\x0b\x0c\x85]+")
_LINK_HOSTS = frozenset({"dashboard.stripe.com"})


def md(text: object) -> str:
    """Return `text` escaped so Streamlit markdown shows it literally, on one line."""
    flat = _LINE_BREAKS.sub(" ", str(text))
    return _MARKDOWN_SPECIAL.sub(r"\\\1", flat)


def stripe_id(value: str) -> str:
    """Return a Stripe id quoted for use as one path segment of a link we build."""
    return quote(value, safe="")


def link_target(url: str) -> str | None:
    """Return `url` if it is an https link to a known host (Stripe's dashboard), else None."""
    parts = urlsplit(url)
    if parts.scheme != "https" or parts.hostname not in _LINK_HOSTS:
        return None
    if parts.username or parts.password or parts.port or any(c in url for c in "\r\n\t <>\"'()"):
        return None
    return url


def chart_label(text: object) -> str:
    """Return `text` escaped for a Plotly label, legend, tick or hover text (no HTML, no %{})."""
    escaped = html.escape(str(text), quote=False)
    return escaped.replace("%{", "%&#123;").replace("\n", " ")
