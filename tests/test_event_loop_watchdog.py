"""Nothing blocks the event loop past the PLC's watchdog (issue 12, item 5).

The PLC opens every relay when its RelayControl keep-alive pauses for about 300 ms, so the
charger's event loop, which sends it, must never stand still that long: not for a central
system's largest requests, not for a disk that takes a second per write. This runs the
station on its PLC backend (the emulated PLCs on python-can's virtual bus) in real time, since
blocking is about wall time, records when every RelayControl frame went onto the bus (a
listener on the same virtual bus: python-can stamps each frame as it is sent), and meanwhile
makes every database commit take SLOW_COMMIT seconds in the thread that commits, sends a
GetCompositeSchedule of the longest duration over a daily recurring profile and a
SendLocalList of the largest size, starts and stops a transaction, makes and cancels a
reservation, changes a gun's availability, and asks the local API for the status all along.
"""

from __future__ import annotations

import gc
import itertools
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import can
import httpx
import pytest
import trio
from ocpp.v16 import call

from dcocpp.api.server import serve_api
from dcocpp.clock import ocpp_time
from dcocpp.hardware.plc import codec
from dcocpp.ocpp.wire import INT32_MAX
from dcocpp.storage.database import Database
from tests.csms import FakeCsms
from tests.starvation import Starvation
from tests.station_harness import charger_config, running_station, use_backend
from tests.storage_faults import slow_commits

KEEPALIVE = 0.1  # s: the PLC driver's RelayControl period (PlcBackend's default)
# How much later than its period a keep-alive may go: well inside the PLC's 300 ms watchdog,
# with room for a loaded two-core machine.
MARGIN = 0.15
SLOW_COMMIT = 1.0  # s every database commit takes while the load runs
API_ANSWER = 0.5  # s within which the local API answers, the disk as slow as it is
LOAD_LIMIT = 30.0  # s the load may take (about 10): a charger that fails shows it in time
# No write the test does not need: each costs SLOW_COMMIT (the authorization cache's, the
# stop samples').
KEYS = {"AuthorizationCacheEnabled": False, "StopTxnSampledData": ""}
DAILY_PROFILE = {
    "chargingProfileId": 7,
    "stackLevel": 1,
    "chargingProfilePurpose": "TxDefaultProfile",
    "chargingProfileKind": "Recurring",
    "recurrencyKind": "Daily",
    "chargingSchedule": {
        "startSchedule": "2026-01-01T00:00:00Z",
        "chargingRateUnit": "A",
        "chargingSchedulePeriod": [
            {"startPeriod": hour * 3600, "limit": 100 + hour} for hour in range(24)
        ],
    },
}


class LongestStep(trio.abc.Instrument):
    """The longest step any task took on the loop, and whose: what to look at when the
    keep-alive paused."""

    def __init__(self) -> None:
        self.longest = (0.0, "")
        self._began: float | None = None  # None: in the step that added the instrument

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._began = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if self._began is not None:
            took = time.perf_counter() - self._began
            if took > self.longest[0]:
                self.longest = (took, task.name)


def keep_alive_gaps(listener: can.BusABC, frame_ids: set[int], since: float) -> dict[int, float]:
    """Per RelayControl frame id, the longest time between two of its frames sent from
    `since` (time.time()) on, from what `listener` received."""
    sent: dict[int, list[float]] = {frame_id: [] for frame_id in frame_ids}
    while (msg := listener.recv(0)) is not None:
        if msg.arbitration_id in sent and msg.timestamp >= since:
            sent[msg.arbitration_id].append(msg.timestamp)
    gaps = {}
    for frame_id, times in sent.items():
        assert len(times) > 10, f"hardly any RelayControl {frame_id:#x} on the bus: {times}"
        gaps[frame_id] = max(b - a for a, b in itertools.pairwise(times))
    return gaps


@pytest.fixture
def plc_config(tmp_path: Path) -> Any:
    use_backend("plc")
    try:
        return charger_config(tmp_path)
    finally:
        use_backend("simulated")


@pytest.fixture
def frozen_heap() -> Iterator[None]:
    """What earlier tests of this process left on the heap is frozen out of the garbage
    collector: a full collection of it (the connector exploration's tables, browsers'
    drivers, ...) is the test run's pause, not the charger's."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.mark.usefixtures("frozen_heap")
async def test_the_plc_keep_alive_never_pauses_while_requests_and_a_slow_disk_load_the_charger(
    plc_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = plc_config
    opened: list[Database] = []
    open_database = Database.open

    def open_and_keep(data_dir: Path, **options: Any) -> Database:
        opened.append(open_database(data_dir, **options))
        return opened[-1]

    monkeypatch.setattr(Database, "open", open_and_keep)
    frame_ids = {codec.frame_id("RelayControl", c.plc_id) for c in config.connectors}
    listener = can.Bus(interface="virtual", channel=config.charge_point.can_interface)
    steps = LongestStep()
    latencies: list[float] = []
    answers: dict[str, Any] = {}
    try:
        with Starvation() as starvation:
            async with running_station(config, FakeCsms(), keys=KEYS) as h:
                await h.booted()
                _, port = await h.nursery.start(serve_api, h.station, "127.0.0.1", 0)
                (db,) = opened
                slow_commits(db, SLOW_COMMIT)
                trio.lowlevel.add_instrument(steps)
                since = time.time()

                async def profile_then_composite() -> None:
                    began = time.monotonic()
                    answers["profile"] = await h.csms_call_raw(
                        "SetChargingProfile",
                        {"connectorId": 0, "csChargingProfiles": DAILY_PROFILE},
                    )
                    answers["profile took"] = time.monotonic() - began
                    answers["composite"] = await h.csms_call_raw(
                        "GetCompositeSchedule", {"connectorId": 1, "duration": INT32_MAX}
                    )

                async def local_list() -> None:
                    entries = [
                        {"idTag": f"LOAD-{n:04d}", "idTagInfo": {"status": "Accepted"}}
                        for n in range(h.store.get_int("SendLocalListMaxLength"))
                    ]
                    answers["list"] = await h.csms_call_raw(
                        "SendLocalList",
                        {"listVersion": 1, "updateType": "Full", "localAuthorizationList": entries},
                    )

                async def transaction() -> None:
                    transaction_id = await h.start_charging(1, "TAG-LOAD")
                    since = h.csms.mark()
                    await h.csms_call(call.RemoteStopTransaction(transaction_id=transaction_id))
                    answers["stop"] = await h.wait_calls("StopTransaction", since=since)

                async def reservation_then_availability() -> None:
                    expiry = ocpp_time(h.station.clock.now() + timedelta(hours=1))
                    reserve = {
                        "connectorId": 2,
                        "expiryDate": expiry,
                        "idTag": "RES",
                        "reservationId": 1,
                    }
                    answers["reserve"] = await h.csms_call_raw("ReserveNow", reserve)
                    answers["cancel"] = await h.csms_call_raw(
                        "CancelReservation", {"reservationId": 1}
                    )
                    answers["availability"] = await h.csms_call_raw(
                        "ChangeAvailability", {"connectorId": 2, "type": "Inoperative"}
                    )

                async def api_all_along(done: trio.Event) -> None:
                    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                        while not done.is_set():
                            began = time.monotonic()
                            response = await client.get("/api/status")
                            latencies.append(time.monotonic() - began)
                            assert response.status_code == 200
                            await trio.sleep(KEEPALIVE)

                done = trio.Event()
                with trio.move_on_after(LOAD_LIMIT) as loading:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(api_all_along, done)
                        async with trio.open_nursery() as load:
                            load.start_soon(profile_then_composite)
                            load.start_soon(local_list)
                            load.start_soon(transaction)
                            load.start_soon(reservation_then_availability)
                        done.set()
                trio.lowlevel.remove_instrument(steps)
                faulted = [
                    s for s in h.csms.received("StatusNotification") if s["status"] == "Faulted"
                ]
        gaps = keep_alive_gaps(listener, frame_ids, since)
    finally:
        listener.shutdown()

    # The keep-alive never paused, no PLC opened its relays on its own, the API answered.
    longest, task = steps.longest
    assert max(gaps.values()) <= KEEPALIVE + MARGIN + starvation.longest, (
        f"keep-alive gaps {gaps}; the longest step on the loop: {longest:.3f} s in {task}; "
        f"the machine let the process wait up to {starvation.longest:.3f} s"
    )
    assert faulted == []
    assert latencies and max(latencies) <= API_ANSWER, latencies
    assert not loading.cancelled_caught, f"the load took over {LOAD_LIMIT} s: {answers}"
    # The disk was as slow as intended, and nothing was acknowledged before it had it.
    assert answers["profile"] == {"status": "Accepted"}
    assert answers["profile took"] >= SLOW_COMMIT
    assert answers["list"] == {"status": "Accepted"}
    assert len(answers["stop"]) == 1
    assert [answers[a]["status"] for a in ("reserve", "cancel", "availability")] == [
        "Accepted",
        "Accepted",
        "Accepted",
    ]
    # The longest composite schedule is answered, as far as ChargingScheduleMaxPeriods goes.
    composite = answers["composite"]
    periods = composite["chargingSchedule"]["chargingSchedulePeriod"]
    assert composite["status"] == "Accepted"
    assert len(periods) == h.store.get_int("ChargingScheduleMaxPeriods")
    assert composite["chargingSchedule"]["duration"] < INT32_MAX
