"""Open a file in Debian's Chromium through Playwright and record what it asked for.

A real browser, not a parser: layout tells whether a chart draws and whether its text
fits, and the request log tells whether a "self-contained" page fetched anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; `make install` installs it

# Every <text> in every chart whose box leaves its <svg> (clipped, unreadable), as
# "chart i: text" strings; an empty list when all text is inside.
OVERFLOWING_TEXT_JS = """() => {
  const out = [];
  document.querySelectorAll('svg').forEach((svg, i) => {
    const w = svg.width.baseVal.value, h = svg.height.baseVal.value;
    svg.querySelectorAll('text').forEach(t => {
      const b = t.getBBox();
      if (b.x < -0.5 || b.y < -0.5 || b.x + b.width > w + 0.5 || b.y + b.height > h + 0.5)
        out.push(`chart ${i}: ${t.textContent}`);
    });
  });
  return out;
}"""

# How many marks (bars, columns, lines) of real size each chart draws.
DRAWN_MARKS_JS = """() => [...document.querySelectorAll('svg')].map(s =>
  [...s.querySelectorAll('rect, path, line, polyline, circle')]
    .filter(e => { const b = e.getBBox(); return b.width > 0.5 && b.height > 0.5; }).length)"""


@dataclass
class OpenedPage:
    """The live page plus every URL it requested and every console error it raised."""

    page: Any
    requested: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@contextmanager
def open_in_chromium(path: Path) -> Iterator[OpenedPage]:
    """Load ``path`` (a local file) in headless Chromium at 1280×900."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            opened = OpenedPage(page)
            page.on("request", lambda r: opened.requested.append(r.url))
            page.on("console", lambda m: m.type == "error" and opened.problems.append(m.text))
            page.on("pageerror", lambda e: opened.problems.append(str(e)))
            page.goto(path.resolve().as_uri(), wait_until="load")
            yield opened
        finally:
            browser.close()
