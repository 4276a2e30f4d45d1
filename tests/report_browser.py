"""Open a built report in headless Chromium (Debian's binary through playwright): images load, links resolve."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

CHROMIUM_CANDIDATES = ("chromium-headless-shell", "chromium", "chromium-browser")


def chromium_binary() -> str:
    """Debian's headless Chromium (.ci/run installs it); the test skips, saying so, when there is none."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file() else None)
        if found:
            return found
    pytest.skip(f"no Chromium binary ({', '.join(CHROMIUM_CANDIDATES)}): apt-get install chromium-headless-shell")


def _check_page(page, url: str, report: Path, external: list[str]) -> list[str]:
    """Load `url`; assert every <img> decoded and every link's target exists; return the links to other pages."""
    response = page.goto(url, wait_until="load")
    assert response is None or response.ok, f"{url} did not load"
    images = page.eval_on_selector_all(
        "img", "els => els.map(e => ({src: e.src.slice(0, 80), ok: e.complete && e.naturalWidth > 0}))"
    )
    broken = [i["src"] for i in images if not i["ok"]]
    assert not broken, f"{url}: images that did not load: {broken}"
    pages = []
    for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"):
        parsed = urlparse(href)
        if parsed.scheme != "file":
            continue  # links inside a notebook's own text (docs, Kaggle) are not the report's
        target = Path(unquote(parsed.path))
        assert target.exists(), f"{url}: link to a missing file {target}"
        assert report in target.parents or target == report, f"{url}: link outside the report {target}"
        if target.suffix == ".html":
            pages.append(target.as_uri())
    assert not external, f"{url} fetched from the network: {external}"
    return pages


def check_report(index: Path, screenshot: Path | None = None) -> dict:
    """Every page reachable from index.html: images decoded, links to existing files, nothing fetched from the
    network. Saves a full-page screenshot of the index to `screenshot`. Returns {"images": n, "pages": [...],
    "table": the runs table's rows as cell texts}."""
    from playwright.sync_api import sync_playwright

    executable = chromium_binary()
    report = index.parent.resolve()
    external: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("request", lambda r: external.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
            pages = _check_page(page, index.resolve().as_uri(), report, external)
            table = page.eval_on_selector_all(
                "#runs tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))"
            )
            images = page.eval_on_selector_all("img", "els => els.length")
            if screenshot:
                page.screenshot(path=str(screenshot), full_page=True)
            for url in dict.fromkeys(pages):
                _check_page(page, url, report, external)
                images += page.eval_on_selector_all("img", "els => els.length")
        finally:
            browser.close()
    return {"images": images, "pages": list(dict.fromkeys(pages)), "table": table}
