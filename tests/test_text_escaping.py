"""Unit tests for dashboard.text: hostile Stripe text stays text."""

from __future__ import annotations

import markdown_it

from dashboard.text import chart_label, link_target, md, stripe_id

HOSTILE = [
    "[Sign in again](https://evil.example/)",
    "![x](https://evil.example/x.png)",
    "<a href=https://evil.example>Re-login</a>",
    '=HYPERLINK("https://evil.example")',
    ":red[alert] :material/lock: $x$ **b** `c`\nline\u202e",
]


def test_md_renders_no_link_image_or_html() -> None:
    parser = markdown_it.MarkdownIt("commonmark")
    for value in HOSTILE:
        rendered = parser.render(md(value))
        assert "<a " not in rendered and "<img" not in rendered
        assert "\n" not in md(value)


def test_link_target_accepts_only_stripe_https() -> None:
    good = f"https://dashboard.stripe.com/test/invoices/{stripe_id('in_1')}"
    assert link_target(good) == good
    assert link_target("https://evil.example/") is None
    assert link_target("http://dashboard.stripe.com/x") is None
    assert link_target("javascript:alert(1)") is None
    assert link_target("https://dashboard.stripe.com.evil.example/") is None
    assert stripe_id("in_1/../../x?y#z") == "in_1%2F..%2F..%2Fx%3Fy%23z"


def test_chart_label_escapes_html_and_templates() -> None:
    assert chart_label("<a href=x>y</a> & %{x}") == "&lt;a href=x&gt;y&lt;/a&gt; &amp; %&#123;x}"
