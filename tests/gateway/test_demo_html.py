"""The report's chart kit in a real browser: charts draw, text stays inside, nothing fetched."""

from __future__ import annotations

from pathlib import Path

from gateway.demo_html import bar_chart, histogram, table, write_report
from tests.utils.browser import DRAWN_MARKS_JS, OVERFLOWING_TEXT_JS, open_in_chromium

LONG_TITLE = (
    "uplift = line with ISV data − line without (yuan), platform merchants with a change, "
    "over the whole six simulated months"
)


def _page(tmp_path: Path) -> Path:
    return write_report(
        tmp_path / "report.html",
        "chart kit",
        [
            ("Bars", bar_chart(LONG_TITLE, ["isv01", "isv02 with a longer name"],
                               {"fees": [158.5, 191.0], "shares": [604.33, 1343.21]},
                               fmt="{:,.2f}")),
            ("Histogram", histogram(LONG_TITLE, [-49_423.0, -10.0, 5.0, 40_976.0], unit=" ¥")),
            ("Empty", histogram("nothing to draw", [])),
            ("Table", table(["ISV", "fees"], [["isv01", "158.50"]])),
        ],
    )


def test_charts_draw_and_keep_their_text_inside(tmp_path: Path) -> None:
    """A long title wraps as HTML instead of running off the chart's right edge."""
    with open_in_chromium(_page(tmp_path)) as opened:
        assert opened.page.evaluate(OVERFLOWING_TEXT_JS) == []
        marks = opened.page.evaluate(DRAWN_MARKS_JS)
        assert marks[0] >= 4 and marks[1] >= 3 and marks[2] == 0  # 2×2 bars (+legend); columns
        caption = opened.page.locator("figcaption").first
        assert caption.is_visible() and caption.inner_text() == LONG_TITLE
        assert opened.page.locator("figcaption").first.bounding_box()["width"] <= 760
    assert len(opened.requested) == 1 and opened.requested[0].startswith("file://")
    assert opened.problems == []
