"""The operator's console in a real browser: Debian's chromium, headless, driven by Selenium
through Debian's chromium-driver (nothing is downloaded), against a real charger
(`python -m dcocpp run`, simulated guns, the asyncio central system in its own process).

The browser reaches nothing but loopback: host names resolve to nothing (but 127.0.0.1) and
every other request goes to a proxy that is not there. One browser and one charger for the
module. The last test writes the README's screenshot, docs/console.png.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.console_station import ConsoleStation, console_station, gun
from tests.processes import REPO_ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip(
        "the browser tests need Debian's chromium and its driver: apt-get install chromium"
        " chromium-driver",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="pip install -e '.[test]'")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

pytestmark = pytest.mark.process

SCREENSHOT = REPO_ROOT / "docs" / "console.png"
SCREENSHOT_MAX_BYTES = 300 * 1024
PAGE_TIMEOUT = 10.0
# Host names resolve to nothing but loopback, and whatever is not loopback goes through a
# proxy nobody listens on (chromium always reaches loopback directly).
BLOCKED_NETWORK = [
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
]


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStation]:
    with console_station(tmp_path_factory.mktemp("browser"), MeterValueSampleInterval=2) as s:
        s.charge(1, "TAG-WEB")  # gun 1 charges while the page is open
        yield s


@pytest.fixture(scope="module")
def browser(station: ConsoleStation) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in [
        "--headless=new",
        "--no-sandbox",  # root in CI containers
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1400",
        *BLOCKED_NETWORK,
    ]:
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(PAGE_TIMEOUT)
        driver.get(station.base + "/")
        wait(driver, lambda d: d.find_element(By.ID, "live").text == "live", "the page live")
        yield driver
    finally:
        driver.quit()


def wait(
    driver: WebDriver, until: Callable[[WebDriver], Any], what: str, timeout: float = PAGE_TIMEOUT
) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.02).until(
        until, message=f"the page never showed {what} within {timeout} s"
    )


def shown_status(driver: WebDriver, cid: int) -> str:
    return driver.find_element(By.CSS_SELECTOR, f"#gun-{cid} .status").text


def button(driver: WebDriver, cid: int, action: str) -> Any:
    return driver.find_element(By.CSS_SELECTOR, f'#gun-{cid} button[data-action="{action}"]')


def test_the_page_shows_both_guns_with_their_status_and_kw(
    station: ConsoleStation, browser: WebDriver
) -> None:
    snapshot = station.status()
    for cid in (1, 2):
        wait(browser, lambda d, c=cid: shown_status(d, c) == gun(snapshot, c)["status"], "status")
    assert shown_status(browser, 1) == "Charging"
    assert shown_status(browser, 2) == "Available"
    power = float(browser.find_element(By.CSS_SELECTOR, "#gun-1 .power").text)
    assert power == pytest.approx(gun(station.status(), 1)["powerW"] / 1000, abs=1.0)
    assert power > 0
    assert browser.find_element(By.CSS_SELECTOR, "#gun-2 .power").text == "0.0"


def test_a_status_change_reaches_the_page_within_a_second(
    station: ConsoleStation, browser: WebDriver
) -> None:
    station.post("/api/connectors/2/plug")
    asked = time.monotonic()
    try:
        wait(browser, lambda d: shown_status(d, 2) == "Preparing", "gun 2 Preparing", 1.0)
        assert time.monotonic() - asked < 1.0
    finally:
        station.post("/api/connectors/2/unplug")
        wait(browser, lambda d: shown_status(d, 2) == "Available", "gun 2 Available again")


def test_the_plot_gains_points(browser: WebDriver) -> None:
    def points() -> int:
        return int(browser.find_element(By.ID, "plot-1").get_attribute("data-points") or 0)

    before = points()
    wait(browser, lambda d: points() >= before + 2, "new points on gun 1's plot", 3.0)
    # uPlot drew them: its canvas is there, sized to the plot.
    canvas = browser.find_element(By.CSS_SELECTOR, "#plot-1 canvas")
    assert canvas.size["width"] > 200


def test_clicking_the_controls_changes_the_status_on_the_page(
    station: ConsoleStation, browser: WebDriver
) -> None:
    button(browser, 2, "plug").click()
    wait(browser, lambda d: shown_status(d, 2) == "Preparing", "gun 2 Preparing after Plug")
    tag = browser.find_element(By.CSS_SELECTOR, "#gun-2 .tag-input")
    tag.clear()
    tag.send_keys("TAG-CLICK")
    button(browser, 2, "authorize").click()
    wait(browser, lambda d: shown_status(d, 2) == "Charging", "gun 2 Charging after the tag")
    outcome = browser.find_element(By.CSS_SELECTOR, "#gun-2 .outcome")
    wait(browser, lambda d: outcome.text.startswith("TAG-CLICK: Accepted"), "the tag's outcome")
    assert gun(station.status(), 2)["idTag"] == "TAG-CLICK"
    button(browser, 2, "unplug").click()
    wait(browser, lambda d: shown_status(d, 2) == "Available", "gun 2 Available after Unplug")


def test_the_message_log_shows_start_transaction_and_its_answer(browser: WebDriver) -> None:
    rows = wait(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, '#log tr[data-action="StartTransaction"]'),
        "StartTransaction in the message log",
    )
    kinds = [row.get_attribute("data-type") for row in rows]
    assert "CALL" in kinds and "CALLRESULT" in kinds
    answer = next(row for row in rows if row.get_attribute("data-type") == "CALLRESULT")
    cells = answer.find_elements(By.TAG_NAME, "td")
    assert cells[4].text.endswith(" ms")  # the round trip, paired with its CALL
    assert '"transactionId":' in cells[5].text
    # Filtered by action, only StartTransaction rows stay visible.
    Select(browser.find_element(By.ID, "filter-action")).select_by_value("StartTransaction")
    try:
        visible = [
            r for r in browser.find_elements(By.CSS_SELECTOR, "#log tbody tr") if r.is_displayed()
        ]
        assert visible
        assert {r.get_attribute("data-action") for r in visible} == {"StartTransaction"}
    finally:
        Select(browser.find_element(By.ID, "filter-action")).select_by_value("")


def test_the_page_works_with_the_network_blocked_except_loopback(
    station: ConsoleStation, browser: WebDriver
) -> None:
    loaded = browser.execute_script(
        "return [location.href, ...performance.getEntriesByType('resource').map(e => e.name)]"
    )
    hosts = {urlsplit(url).hostname for url in loaded}
    assert hosts == {"127.0.0.1"}, loaded
    assert any(url.endswith("/static/vendor/uplot/uPlot.iife.min.js") for url in loaded)
    # The block is real: this browser cannot fetch from anywhere else.
    outcome = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('http://example.com/').then(() => done('reached'), () => done('blocked'));"
    )
    assert outcome == "blocked"
    # ... and the page rendered anyway: uPlot's charts and the guns.
    assert browser.find_elements(By.CSS_SELECTOR, "#plot-1 .uplot")
    assert browser.find_element(By.ID, "cp-id").text == station.status()["chargePoint"]["id"]


def test_the_readme_screenshot_is_the_page_while_charging(
    station: ConsoleStation, browser: WebDriver
) -> None:
    station.charge(2, "TAG-DEMO")
    try:
        wait(browser, lambda d: shown_status(d, 2) == "Charging", "both guns charging")
        time.sleep(2.0)  # a few more points on the plots
        browser.execute_script("window.scrollTo(0, 0)")
        png = browser.get_screenshot_as_png()
    finally:
        station.post("/api/connectors/2/unplug")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) < SCREENSHOT_MAX_BYTES, len(png)
    SCREENSHOT.write_bytes(png)
