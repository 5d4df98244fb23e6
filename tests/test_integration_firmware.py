"""UpdateFirmware as an operator runs it: `python -m dcocpp run` under a supervisor loop that
restarts it (as systemd's `Restart=` does), against the separate-process asyncio central
system, with the firmware served by a real HTTP server on loopback.

What the central system sees must be true across the reboot the install causes and across a
process killed in the middle: each FirmwareStatusNotification once, Installed only after the
BootNotification of the new firmware, InstallationFailed when the install was cut off.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dcocpp.cli.commands import EXIT_HARD_RESET
from tests.processes import REPO_ROOT, ManagedProcess, start_charger, start_peer_csms

pytestmark = pytest.mark.process

START_TIMEOUT = 10.0
FLOW_TIMEOUT = 60.0  # download, install, reboot, boot: a few seconds; generous for a busy CI
NEW_VERSION = "9.1.0-field"
IMAGE = f"DCOCPP-FIRMWARE {NEW_VERSION}\n".encode() + os.urandom(256 * 1024)


class FirmwareServer:
    """Serves `IMAGE` at /fw.bin over HTTP/1.1 with Range support (an ETag for If-Range).
    With `stall_at`, the first response sends that many bytes and then waits (until the
    charger is killed): a download cut off mid-file."""

    def __init__(self, *, stall_at: int | None = None) -> None:
        self.requests: list[dict[str, str | None]] = []
        self.stalled = threading.Event()  # the stalled response has sent its first part
        self.release = threading.Event()  # ends the stall
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                seen = {"path": self.path, "range": self.headers.get("Range")}
                server.requests.append(seen)
                if self.path != "/fw.bin":
                    self.send_error(404)
                    return
                start = 0
                wanted = self.headers.get("Range")
                if_range = self.headers.get("If-Range")
                if wanted and wanted.startswith("bytes=") and if_range in (None, '"v1"'):
                    start = int(wanted[len("bytes=") :].split("-", 1)[0])
                body = IMAGE[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header(
                        "Content-Range", f"bytes {start}-{len(IMAGE) - 1}/{len(IMAGE)}"
                    )
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", '"v1"')
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                first = len(server.requests) == 1
                if stall_at is not None and first:
                    self.wfile.write(body[:stall_at])
                    self.wfile.flush()
                    server.stalled.set()
                    server.release.wait(FLOW_TIMEOUT)
                    return
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the test's own assertions say what was asked

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a charger killed mid-transfer resets its connection: expected here

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/fw.bin"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def firmware_server() -> Iterator[Callable[..., FirmwareServer]]:
    servers: list[FirmwareServer] = []

    def start(**kwargs: Any) -> FirmwareServer:
        servers.append(FirmwareServer(**kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


class Supervisor:
    """Runs the charger again whenever it ends with a status a service manager restarts on
    (the hard-reset status 3 an install ends with, or a kill), like systemd with
    `Restart=on-failure`; stops restarting on 0 or a usage error (2)."""

    def __init__(self, start: Callable[[int], ManagedProcess]) -> None:
        self._start = start
        self.runs: list[ManagedProcess] = []
        self.exits: list[int] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.runs.append(start(0))
        self._thread.start()

    @property
    def current(self) -> ManagedProcess:
        with self._lock:
            return self.runs[-1]

    def _loop(self) -> None:
        while not self._stopping.is_set():
            status = self.current.popen.wait()
            self.current.stop()  # reaped: close its pipes
            self.exits.append(status)
            if self._stopping.is_set() or status in (0, 2):
                return
            with self._lock:
                self.runs.append(self._start(len(self.runs)))

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            runs = list(self.runs)
        for run in runs:
            run.stop()
        self._thread.join(10)

    def describe(self) -> str:
        return "\n".join(run.describe() for run in self.runs) + f"\nexits: {self.exits}"


def charger_config(tmp: Path, install_command: list[str] | None = None) -> Path:
    """The shipped charger.json under `tmp` (paths made absolute), with an install hook."""
    source = REPO_ROOT / "configs" / "charger.json"
    document = json.loads(source.read_text(encoding="utf-8"))
    for key, value in document["security"].items():
        document["security"][key] = str((source.parent / value).resolve())
    paths = document.setdefault("paths", {})
    paths["ocppConfig"] = str(source.parent / paths.get("ocppConfig", "ocpp16-config.json"))
    if install_command is not None:
        document["firmware"] = {"installCommand": install_command, "installTimeoutSeconds": 60}
    path = tmp / "charger.json"
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return path


def update_steps(url: str, statuses_before_reboot: int, statuses_after: int) -> list[Any]:
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return [
        {"wait_for": "StatusNotification", "count": 3, "timeout": START_TIMEOUT},
        {
            "call": "UpdateFirmware",
            "payload": {"location": url, "retrieveDate": now, "retries": 1, "retryInterval": 1},
        },
        {
            "wait_for": "FirmwareStatusNotification",
            "count": statuses_before_reboot,
            "timeout": FLOW_TIMEOUT,
        },
        {
            "wait_for": "FirmwareStatusNotification",
            "count": statuses_after,
            "timeout": FLOW_TIMEOUT,
        },
        # Long enough for a duplicate to show (the outbox sends at once once Accepted).
        {"sleep": 3},
    ]


def wait_until(condition: Callable[[], bool], timeout: float = FLOW_TIMEOUT) -> bool:
    """Whether `condition` came true within `timeout` s (polled)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def calls(events: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("event") == "call" and e.get("action") == action]


def firmware_statuses(events: list[dict[str, Any]]) -> list[str]:
    return [e["payload"]["status"] for e in calls(events, "FirmwareStatusNotification")]


def run_update(
    tmp: Path,
    url: str,
    *,
    before: int,
    after: int,
    config: Path | None = None,
    during: Callable[[Supervisor], None] | None = None,
) -> tuple[list[dict[str, Any]], Supervisor]:
    """The central system asks for the update; the charger runs under the supervisor until
    the script saw `before` then `after` FirmwareStatusNotifications (`during` runs in
    between, e.g. to kill it); returns the central system's record and the supervisor."""
    csms, port = start_peer_csms(tmp, update_steps(url, before, after), timeout=START_TIMEOUT)
    csms_url = f"ws://127.0.0.1:{port}/ocpp"
    supervisor: Supervisor | None = None
    try:
        supervisor = Supervisor(
            lambda n: start_charger(tmp, csms_url, name=f"charger-{n}", config=config)
        )
        if during is not None:
            during(supervisor)
        try:
            csms.stdout.wait_for_event(
                lambda e: e.get("event") == "script_done", 2 * FLOW_TIMEOUT + 10
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{supervisor.describe()}") from None
        timeouts = [e for e in csms.stdout.events if e.get("event") == "wait_timeout"]
        assert not timeouts, f"{timeouts}\n{supervisor.describe()}"
        return csms.stdout.events, supervisor
    finally:
        if supervisor is not None:
            supervisor.stop()
        csms.stop()


def test_tc_044_1_firmware_installs_reboots_under_the_supervisor_and_reports_installed_once(
    tmp_path: Path, firmware_server: Callable[..., FirmwareServer]
) -> None:
    server = firmware_server()
    events, supervisor = run_update(tmp_path, server.url, before=3, after=1)
    context = supervisor.describe()
    assert firmware_statuses(events) == ["Downloading", "Downloaded", "Installing", "Installed"], (
        context
    )
    assert supervisor.exits[:1] == [EXIT_HARD_RESET], context
    assert len(supervisor.runs) == 2, context  # one reboot, no more
    boots = calls(events, "BootNotification")
    assert len(boots) == 2, context
    assert boots[0]["payload"]["firmwareVersion"] == "0.1.0"  # configs/charger.json
    assert boots[1]["payload"]["firmwareVersion"] == NEW_VERSION
    # Installed is what the new firmware says, after its BootNotification.
    installed = calls(events, "FirmwareStatusNotification")[-1]
    assert events.index(installed) > events.index(boots[1])
    updated = [
        e
        for e in calls(events, "SecurityEventNotification")
        if e["payload"]["type"] == "FirmwareUpdated"
    ]
    assert len(updated) == 1 and events.index(updated[0]) > events.index(boots[1]), context
    assert [r["path"] for r in server.requests] == ["/fw.bin"]
    assert not (tmp_path / "data" / "firmware" / "fw.bin").exists()  # nothing left behind


def test_a_charger_killed_during_the_download_resumes_it_and_reports_each_step_once(
    tmp_path: Path, firmware_server: Callable[..., FirmwareServer]
) -> None:
    server = firmware_server(stall_at=100_000)

    part = tmp_path / "data" / "firmware" / "fw.bin.part"

    def kill_mid_file(supervisor: Supervisor) -> None:
        assert server.stalled.wait(FLOW_TIMEOUT), supervisor.describe()
        # Killed once the charger has written what the server sent (not while it is still in
        # its socket buffer).
        assert wait_until(lambda: part.exists() and part.stat().st_size > 0), supervisor.describe()
        supervisor.current.send_signal(signal.SIGKILL)  # the supervisor starts it again
        server.release.set()

    events, supervisor = run_update(tmp_path, server.url, before=3, after=1, during=kill_mid_file)
    context = supervisor.describe()
    assert firmware_statuses(events) == ["Downloading", "Downloaded", "Installing", "Installed"], (
        context
    )
    assert supervisor.exits[:2] == [-signal.SIGKILL, EXIT_HARD_RESET], context
    # The restarted charger went on from where the killed one was cut off.
    assert len(server.requests) == 2, server.requests
    resumed = server.requests[1]["range"]
    assert resumed is not None and int(resumed.split("=")[1].split("-")[0]) > 0, server.requests
    boots = calls(events, "BootNotification")
    assert [b["payload"]["firmwareVersion"] for b in boots] == ["0.1.0", "0.1.0", NEW_VERSION]


def test_a_charger_killed_during_the_install_reports_installation_failed_once(
    tmp_path: Path, firmware_server: Callable[..., FirmwareServer]
) -> None:
    server = firmware_server()
    started = tmp_path / "hook-started"
    hook = tmp_path / "install-hook"
    # An updater that takes its time: it says it started (with its pid), then works.
    hook.write_text(
        f'#!/bin/sh\necho $$ > "{started}.tmp"\nmv "{started}.tmp" "{started}"\nsleep 60\n'
    )
    hook.chmod(0o755)
    config = charger_config(tmp_path, [str(hook)])

    def kill_during_install(supervisor: Supervisor) -> None:
        assert wait_until(started.exists), supervisor.describe()
        supervisor.current.send_signal(signal.SIGKILL)
        # A killed charger leaves its hook running (it is the updater's own process): gone
        # here so that the test leaves nothing behind.
        os.kill(int(started.read_text()), signal.SIGKILL)

    events, supervisor = run_update(
        tmp_path, server.url, before=3, after=1, config=config, during=kill_during_install
    )
    context = supervisor.describe()
    assert firmware_statuses(events) == [
        "Downloading",
        "Downloaded",
        "Installing",
        "InstallationFailed",
    ], context
    assert supervisor.exits[:1] == [-signal.SIGKILL], context
    boots = calls(events, "BootNotification")
    assert [b["payload"]["firmwareVersion"] for b in boots] == ["0.1.0", "0.1.0"], context
    # The guns held for the install are released after the restart.
    last = {}
    for e in calls(events, "StatusNotification"):
        last[e["payload"]["connectorId"]] = e["payload"]["status"]
    assert last.get(1) == "Available" and last.get(2) == "Available", last
