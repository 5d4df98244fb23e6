"""The operator's console in a real browser: Debian's chromium, headless, driven by Selenium
through Debian's chromium-driver (nothing is downloaded), against a real charger
(`python -m dcocpp run`, simulated guns, the asyncio central system in its own process).

The browser reaches nothing but loopback: host names resolve to nothing (but 127.0.0.1) and
every other request goes to a proxy that is not there. One browser and one charger for the
module; its central system installs a CSMS root and asks for a firmware update from a local
HTTP server that lets the image through only as far as a test allows (so the download is under
way, and stalled, the whole time). The last test takes the README's screenshot.
"""

from __future__ import annotations

import base64
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dcocpp.clock import parse_ocpp_time
from tests.console_station import ConsoleStation, console_station, gun
from tests.pki import issue
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
# Set to 1 to write the README's image (see the screenshot test).
UPDATE_SCREENSHOT = "DCOCPP_UPDATE_SCREENSHOT"
SCREENSHOT_MAX_BYTES = 300 * 1024
WINDOW = (1280, 1400)
PAGE_TIMEOUT = 10.0
MODULE_TIMEOUT = 300.0  # the firmware server's stall ends by then at the latest
IMAGE = b"DCOCPP-FIRMWARE 9.9.9-console\n" + os.urandom(512 * 1024 - 30)
FIRST_BYTES = 96 * 1024  # the server sends this much at once, then stalls
ROOT_VALID_DAYS = 400
# Host names resolve to nothing but loopback, and whatever is not loopback goes through a
# proxy nobody listens on (chromium always reaches loopback directly).
BLOCKED_NETWORK = [
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
]


class GatedFirmwareServer:
    """Serves IMAGE at /fw.bin (its full Content-Length), but only as far as `allow` lets it:
    at `allowed` bytes the response stalls until more is allowed. Never all of it: a complete
    image would hold the guns for its install. Takes PUT uploads into `received`."""

    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self.requests: list[str] = []
        self.received: dict[str, bytes] = {}
        self._gate = threading.Condition()
        self._closed = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server.requests.append(self.path)
                if self.path != "/fw.bin":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(IMAGE)))
                self.end_headers()
                sent = 0
                while True:
                    with server._gate:
                        server._gate.wait_for(
                            lambda done=sent: server.limit() > done or server._closed,
                            MODULE_TIMEOUT,
                        )
                        upto = server.limit()
                        if server._closed or upto <= sent:
                            return  # the test is over (or hung): the connection drops
                    self.wfile.write(IMAGE[sent:upto])
                    self.wfile.flush()
                    sent = upto

            def do_PUT(self) -> None:
                server.requests.append(self.path)
                server.received[self.path] = self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the tests' own assertions say what was asked

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # the charger stopped mid-file at the end of the module: expected

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/fw.bin"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def limit(self) -> int:
        """How far the image goes out now: what is allowed, never the last byte."""
        return min(self.allowed, len(IMAGE) - 1)

    def allow(self, more: int) -> int:
        """Let `more` bytes through; how many are allowed now."""
        with self._gate:
            self.allowed += more
            self._gate.notify_all()
            return self.allowed

    def close(self) -> None:
        with self._gate:
            self._closed = True
            self._gate.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture(scope="module")
def firmware_server() -> Iterator[GatedFirmwareServer]:
    server = GatedFirmwareServer(FIRST_BYTES)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def csms_root_expiry() -> datetime:
    return datetime.now(UTC) + timedelta(days=ROOT_VALID_DAYS)


@pytest.fixture(scope="module")
def station(
    tmp_path_factory: pytest.TempPathFactory,
    firmware_server: GatedFirmwareServer,
    csms_root_expiry: datetime,
) -> Iterator[ConsoleStation]:
    root = issue("Console CSMS Root", not_after=csms_root_expiry)
    diagnostics_url = firmware_server.url.replace("/fw.bin", "/diagnostics")
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    steps = [
        {"wait_for": "StatusNotification", "count": 3, "timeout": 20},
        {
            "call": "InstallCertificate",
            "payload": {"certificateType": "CentralSystemRootCertificate", "certificate": root.pem},
        },
        {"call": "GetDiagnostics", "payload": {"location": diagnostics_url, "retries": 0}},
        {
            "call": "UpdateFirmware",
            "payload": {
                "location": firmware_server.url,
                "retrieveDate": now,
                "retries": 1,
                "retryInterval": 1,
            },
        },
    ]
    with console_station(
        tmp_path_factory.mktemp("browser"), csms_steps=steps, MeterValueSampleInterval=2
    ) as s:
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
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
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


def fact(driver: WebDriver, dl: str, term: str) -> str:
    """The value the page shows for `term` in the definition list `dl` (a CSS selector)."""
    # Read in one go in the page: every update redraws the list.
    shown: dict[str, str] = driver.execute_script(
        """
        const items = [...document.querySelector(arguments[0]).children];
        const shown = {};
        for (let i = 0; i + 1 < items.length; i += 2)
          shown[items[i].textContent] = items[i + 1].textContent;
        return shown;
        """,
        dl,
    )
    return shown.get(term, f"(no {term!r} in {sorted(shown)})")


def metric_samples(station: ConsoleStation) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text, _ = station.get_text("/metrics")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


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


def test_the_firmware_update_shows_its_progress_live(
    station: ConsoleStation, browser: WebDriver, firmware_server: GatedFirmwareServer
) -> None:
    """The central system's UpdateFirmware is downloading from a server that stalls: the
    panel shows the status, the running version, the phase, attempt 1 of 2 and a progress bar
    at the bytes the charger has; when the server lets more through, the bar moves."""
    box = "#transfer-firmware"

    def bar() -> tuple[int, int]:
        progress = browser.find_element(By.CSS_SELECTOR, f"{box} progress")
        return int(progress.get_attribute("value") or -1), int(progress.get_attribute("max") or -1)

    def downloaded(allowed: int) -> dict[str, Any]:
        """The status once the charger has every byte the server let through."""
        return station.wait(
            lambda s: (s["chargePoint"]["firmware"]["update"] or {}).get("bytesDone") == allowed,
            f"{allowed} bytes of the firmware downloaded",
        )["chargePoint"]["firmware"]

    firmware = downloaded(firmware_server.allowed)
    update = firmware["update"]
    assert (firmware["status"], update["phase"]) == ("Downloading", "downloading")
    assert (update["attempt"], update["attempts"], update["bytesTotal"]) == (1, 2, len(IMAGE))
    wait(browser, lambda d: bar() == (firmware_server.allowed, len(IMAGE)), "the firmware's bar")
    panel = browser.find_element(By.CSS_SELECTOR, box)
    assert panel.get_attribute("data-status") == "Downloading"
    assert panel.get_attribute("data-phase") == "downloading"
    dl = f"{box} dl"
    assert fact(browser, dl, "running") == firmware["version"] == "0.1.0"  # configs/charger.json
    assert fact(browser, dl, "update") == f"fw.bin from {firmware_server.url}"
    assert fact(browser, dl, "phase") == "downloading"
    assert fact(browser, dl, "attempt") == "1 of 2"
    assert fact(browser, dl, "last error") == "none"
    text = browser.find_element(By.CSS_SELECTOR, f"{box} .progress-text").text
    kib = f"{update['bytesDone'] / 1024:.1f} KiB of {len(IMAGE) / 1024:.1f} KiB"
    assert text == f"{update['percent']:.1f} % ({kib})"

    # /metrics says the same as the status.
    samples = metric_samples(station)
    firmware_label = frozenset({("transfer", "firmware")})
    assert samples[("dcocpp_transfer_bytes", firmware_label)] == update["bytesDone"]
    assert samples[("dcocpp_transfer_size_bytes", firmware_label)] == len(IMAGE)
    assert samples[("dcocpp_firmware_status", frozenset({("status", "Downloading")}))] == 1
    assert samples[("dcocpp_firmware_status", frozenset({("status", "Idle")}))] == 0
    assert samples[("dcocpp_firmware_info", frozenset({("version", "0.1.0")}))] == 1

    # The server lets more through: the bar follows, live.
    allowed = firmware_server.allow(160 * 1024)
    wait(browser, lambda d: bar() == (allowed, len(IMAGE)), "the bar at the new bytes")
    assert downloaded(allowed)["update"]["percent"] == pytest.approx(
        100 * allowed / len(IMAGE), abs=0.05
    )
    assert firmware_server.requests.count("/fw.bin") == 1  # one attempt, still under way


def test_the_diagnostics_upload_shows_what_it_sent(
    station: ConsoleStation, browser: WebDriver, firmware_server: GatedFirmwareServer
) -> None:
    diagnostics = station.wait(
        lambda s: s["chargePoint"]["diagnostics"]["status"] == "Uploaded",
        "the diagnostics uploaded",
    )["chargePoint"]["diagnostics"]
    upload = diagnostics["upload"]
    sent = firmware_server.received[f"/diagnostics/{upload['file_name']}"]
    assert upload["bytes_done"] == upload["bytes_total"] == len(sent) > 0
    box = "#transfer-diagnostics"
    wait(
        browser,
        lambda d: d.find_element(By.CSS_SELECTOR, box).get_attribute("data-status") == "Uploaded",
        "the diagnostics Uploaded",
    )
    progress = browser.find_element(By.CSS_SELECTOR, f"{box} progress")
    assert progress.get_attribute("value") == progress.get_attribute("max") == str(len(sent))
    assert browser.find_element(By.CSS_SELECTOR, f"{box} .progress-text").text.startswith(
        "100.0 % ("
    )
    dl = f"{box} dl"
    assert fact(browser, dl, "file") == f"{upload['file_name']} to {upload['location']}"
    assert upload["location"] == firmware_server.url.replace("/fw.bin", "/diagnostics")
    assert fact(browser, dl, "attempt") == "1 of 1"
    assert fact(browser, dl, "last error") == "none"
    # Nothing asked of the log upload: said so, without a bar.
    logs = "#transfer-logs"
    assert browser.find_element(By.CSS_SELECTOR, f"{logs} .transfer-status").text == "Idle"
    assert fact(browser, f"{logs} dl", "file") == "none"
    assert not browser.find_element(By.CSS_SELECTOR, f"{logs} .progress-line").is_displayed()
    samples = metric_samples(station)
    assert samples[("dcocpp_transfer_bytes", frozenset({("transfer", "diagnostics")}))] == len(sent)


def test_the_central_system_panel_shows_the_security_profile_and_certificate_expiry(
    station: ConsoleStation, browser: WebDriver, csms_root_expiry: datetime
) -> None:
    security = station.wait(
        lambda s: s["chargePoint"]["security"]["centralSystemRoots"] == 1,
        "the central system's root installed",
    )["chargePoint"]["security"]
    assert security["securityProfile"] == 0  # ws:// and no AuthorizationKey
    assert security["configuredProfile"] is None and not security["onTrial"]
    assert security["chargePointCertificateValidTo"] is None
    valid_to = parse_ocpp_time(security["centralSystemRootsValidTo"])
    assert abs(valid_to - csms_root_expiry) < timedelta(seconds=1)
    dl = "#link-facts"
    wait(
        browser,
        lambda d: fact(d, dl, "CSMS root certificates").startswith("1 installed"),
        "the installed root",
    )
    assert fact(browser, dl, "security profile") == "0 (no authentication, no TLS)"
    assert fact(browser, dl, "configured profile") == "none set by the central system"
    assert fact(browser, dl, "last fallback") == "none"
    assert fact(browser, dl, "charge point certificate") == "none"
    roots = fact(browser, dl, "CSMS root certificates")
    assert roots.startswith("1 installed; the first expires ")
    days = ROOT_VALID_DAYS - 1  # whole days left: less than ROOT_VALID_DAYS since it was made
    assert roots.endswith(f"(in {days} days)") or roots.endswith(f"(in {days + 1} days)"), roots
    expiry = metric_samples(station)
    root_label = frozenset({("certificate", "central_system_root")})
    assert expiry[("dcocpp_certificate_expiry_timestamp_seconds", root_label)] == (
        valid_to.timestamp()
    )
    assert not any(
        name == "dcocpp_certificate_expiry_timestamp_seconds"
        and (("certificate", "charge_point") in labels)
        for name, labels in expiry
    )


def test_the_readme_screenshot_is_the_page_while_charging(
    station: ConsoleStation, browser: WebDriver, tmp_path: Path
) -> None:
    """The README's image is this page, drawn by a real browser while both guns charge and
    the firmware downloads. It goes to docs/console.png only with DCOCPP_UPDATE_SCREENSHOT=1,
    otherwise to a temporary file with the same checks: a live page (clock times, measured
    power, plot traces, transaction ids) never draws the same pixels twice, so writing it on
    every run would change a tracked file each time, and skipping "similar" images would take
    a threshold nobody could justify. Refreshing it is a deliberate step (README,
    Development), and the image still only ever comes from here."""
    target = SCREENSHOT if os.environ.get(UPDATE_SCREENSHOT) == "1" else tmp_path / "console.png"
    station.charge(2, "TAG-DEMO")
    try:
        wait(browser, lambda d: shown_status(d, 2) == "Charging", "both guns charging")
        time.sleep(2.0)  # a few more points on the plots
        browser.execute_script("window.scrollTo(0, 0)")
        png = browser.get_screenshot_as_png()
        viewport = browser.execute_script(
            "return [innerWidth * devicePixelRatio, innerHeight * devicePixelRatio]"
        )
        # Decoded by the browser's own PNG decoder: its size, and how many colours a sample
        # of its pixels has (a blank or failed page has a handful).
        decoded = browser.execute_async_script(
            """
            const done = arguments[arguments.length - 1];
            const data = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
            createImageBitmap(new Blob([data], { type: "image/png" })).then((bitmap) => {
              const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
              const context = canvas.getContext("2d");
              context.drawImage(bitmap, 0, 0);
              const image = context.getImageData(0, 0, bitmap.width, bitmap.height);
              const pixels = new Uint32Array(image.data.buffer);
              const colours = new Set();
              for (let i = 0; i < pixels.length; i += 7) colours.add(pixels[i]);
              done([bitmap.width, bitmap.height, colours.size]);
            }, (error) => done(String(error)));
            """,
            base64.b64encode(png).decode("ascii"),
        )
    finally:
        station.post("/api/connectors/2/unplug")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) < SCREENSHOT_MAX_BYTES, len(png)
    assert isinstance(decoded, list), decoded  # else the decoder's error
    width, height, colours = decoded
    assert [width, height] == [round(v) for v in viewport]
    assert colours > 200, colours
    target.write_bytes(png)
