"""Self-test of the independent asyncio CSMS peer (tests/peers/asyncio_csms.py).

The CSMS runs as a subprocess; the charge point side is the ``ocpp`` package's
own asyncio ChargePoint on the ``websockets`` client, driven with asyncio.run()
from a plain (non-trio) test function. Nothing from dcocpp is involved.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from websockets.asyncio.client import connect

REPO_ROOT = Path(__file__).parents[1]
TIMEOUT = 5.0

SCRIPT = [
    {"call": "GetConfiguration", "payload": {"key": ["HeartbeatInterval"]}},
    {"raw": [2, "selftest-raw-1", "FooBar", {}], "timeout": 3},
    {"raw": [2, "selftest-raw-2", "Reset", {"type": "Hard"}], "timeout": 3},
]


class SelftestChargePoint(ChargePoint):
    """Minimal charge point: answers GetConfiguration, nothing else."""

    get_configuration_keys: list[Any] | None = None

    @on("GetConfiguration")
    def on_get_configuration(self, key: list[str] | None = None, **_: Any):
        self.get_configuration_keys = key
        return call_result.GetConfiguration(
            configuration_key=[{"key": k, "readonly": True, "value": "7"} for k in key or []]
        )


class LineReader:
    """Reads the CSMS's stdout on a thread, so waits can be bounded by timeouts."""

    def __init__(self, stream) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        self.script_done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream) -> None:
        try:
            for line in stream:
                if '"event": "script_done"' in line:
                    self.script_done.set()  # lets the client stop waiting
                self.lines.put(line.rstrip("\n"))
        except (OSError, ValueError):
            pass
        finally:
            self.lines.put(None)

    def next_line(self, timeout: float = TIMEOUT) -> str | None:
        line = self.lines.get(timeout=timeout)
        if line is not None and line.startswith("{"):
            self.events.append(json.loads(line))
        return line

    def until(self, predicate, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Consume lines until an event matching ``predicate`` arrives."""
        for event in self.events:
            if predicate(event):
                return event
        while True:
            line = self.next_line(timeout)
            if line is None:
                raise AssertionError(f"CSMS stdout closed; events so far: {self.events}")
            if line.startswith("{") and predicate(self.events[-1]):
                return self.events[-1]

    def join(self, timeout: float = TIMEOUT) -> None:
        self._thread.join(timeout)


async def run_charge_point(port: int, reader: LineReader) -> SelftestChargePoint:
    async with asyncio.timeout(TIMEOUT):
        async with connect(
            f"ws://127.0.0.1:{port}/ocpp/SELFTEST-CP", subprotocols=["ocpp1.6"]
        ) as ws:
            assert ws.subprotocol == "ocpp1.6"
            cp = SelftestChargePoint("SELFTEST-CP", ws)
            receiver = asyncio.create_task(cp.start())
            try:
                boot = await cp.call(
                    call.BootNotification(charge_point_model="Selftest", charge_point_vendor="X"),
                    suppress=False,
                )
                assert boot.status == "Accepted"
                assert boot.interval == 2
                assert boot.current_time.endswith("Z")
                # The script runs against us now; wait (bounded) until it is done.
                assert await asyncio.to_thread(reader.script_done.wait, TIMEOUT)
            finally:
                receiver.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await receiver
    return cp


@pytest.mark.process
def test_asyncio_csms_selftest(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps(SCRIPT), encoding="utf-8")
    record = tmp_path / "events.jsonl"
    stderr_path = tmp_path / "csms.stderr"

    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.peers.asyncio_csms",
                "--port",
                "0",
                "--script",
                str(script),
                "--record",
                str(record),
            ],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        assert proc.stdout is not None
        reader = LineReader(proc.stdout)
        first = reader.next_line(timeout=TIMEOUT)
        assert first is not None and first.startswith("LISTENING "), first
        port = int(first.split()[1])
        assert port > 0

        cp = asyncio.run(run_charge_point(port, reader))
        assert cp.get_configuration_keys == ["HeartbeatInterval"]

        connected = reader.until(lambda e: e["event"] == "connected")
        assert connected == {
            "event": "connected",
            "cp_id": "SELFTEST-CP",
            "subprotocol": "ocpp1.6",
            "authorization": None,
            "path": "/ocpp/SELFTEST-CP",
            "client_subject": None,  # no TLS here
        }
        boot = reader.until(lambda e: e["event"] == "call")
        assert boot["action"] == "BootNotification"
        assert boot["cp_id"] == "SELFTEST-CP"
        assert boot["payload"] == {"chargePointModel": "Selftest", "chargePointVendor": "X"}
        assert isinstance(boot["time"], float)

        result = reader.until(lambda e: e.get("step") == 0)
        assert result == {
            "event": "result",
            "step": 0,
            "call": "GetConfiguration",
            "payload": {
                "configurationKey": [{"key": "HeartbeatInterval", "readonly": True, "value": "7"}]
            },
        }
        unknown = reader.until(lambda e: e.get("step") == 1)
        assert unknown["event"] == "raw_reply"
        assert unknown["frame"][:3] == [4, "selftest-raw-1", "NotSupported"]
        unhandled = reader.until(lambda e: e.get("step") == 2)
        assert unhandled["event"] == "raw_reply"
        assert unhandled["frame"][:3] == [4, "selftest-raw-2", "NotImplemented"]
        reader.until(lambda e: e["event"] == "script_done")
        reader.until(lambda e: e["event"] == "disconnected")

        proc.terminate()
        assert proc.wait(timeout=TIMEOUT) == 0
        while reader.next_line() is not None:  # drain to EOF
            pass
        reader.join()

        recorded = [json.loads(line) for line in record.read_text().splitlines()]
        assert recorded == reader.events
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=TIMEOUT)
        if proc.stdout is not None:
            proc.stdout.close()
