"""The HTML report in a real browser: headless Chromium, network off, no script error, every chart drawn.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``make test`` installs them when run as
root) and selenium (the ``dev`` extra); without them the test skips and says why.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from unbottle.reporting.output import write_report
from unbottle.store import Store

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")
CHARTED = ("optimize", "profile", "train", "train-compare", "ab", "bench", "eval", "distill")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Per chart: how many plotly SVG layers it has and how many drawn shapes (paths, text) they hold.
_CHART_STATE = """
return Array.from(document.querySelectorAll('figure.chart')).map(function (f) {
  var plot = f.querySelector('.plot');
  var svgs = plot.querySelectorAll('svg.main-svg');
  var shapes = plot.querySelectorAll('svg.main-svg path, svg.main-svg text').length;
  return {key: f.dataset.chart, rendered: plot.getAttribute('data-rendered'), svgs: svgs.length,
          shapes: shapes, height: plot.getBoundingClientRect().height};
});
"""
_ALL_DRAWN = (
    "return Array.from(document.querySelectorAll('.plot'))"
    ".every(function (p) { return p.getAttribute('data-rendered') === '1'; })"
    " || window.__unbottleErrors.length > 0;"
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium with a fresh profile and the network switched off."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(
            f"{' and '.join(missing)} not installed (Debian: apt-get install chromium chromium-driver)"
        )
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is missing: pip install -e '.[dev]'"
    )
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        *FLAGS,
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    driver.set_network_conditions(offline=True, latency=0, download_throughput=0, upload_throughput=0)
    yield driver
    driver.quit()


@pytest.mark.parametrize("kind", CHARTED)
def test_report_renders_every_chart_offline_without_script_errors(browser, runs, tmp_path, kind):
    from selenium.webdriver.support.ui import WebDriverWait

    page = write_report(Store(), runs[kind], tmp_path / f"{kind}.html")
    browser.get_log("browser")  # drop messages from earlier pages
    browser.get(page.resolve().as_uri())
    WebDriverWait(browser, 30).until(lambda d: d.execute_script(_ALL_DRAWN))

    assert browser.execute_script("return window.__unbottleErrors") == []
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == [], severe
    charts = browser.execute_script(_CHART_STATE)
    assert charts, f"the {kind} report has no chart"
    for chart in charts:
        assert chart["rendered"] == "1" and chart["svgs"] >= 1, chart
        assert chart["shapes"] > 10 and chart["height"] > 150, f"chart {chart['key']} is empty: {chart}"
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(url.startswith(("file:", "data:", "blob:")) for url in loaded), loaded

    shot = _full_page_screenshot(browser, tmp_path / f"{kind}.png")
    assert shot.read_bytes()[:8] == PNG_SIGNATURE and shot.stat().st_size > 30_000, shot


def _full_page_screenshot(driver, path: Path) -> Path:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(int(height) + 40, 12000))
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1000)
    return path
