"""What a gun's transactions bill: the meter's register as a transaction may bill it, and
each transaction's timestamps, from its start until its StopTransaction is queued.

Billing follows physics, not the meter's word: a register is never below one already billed
(meterStart, MeterValues, stop samples, the persisted reading) nor above what the gun's
rating can have delivered since (`RegisterRun`), and never beyond what OCPP 1.6's integer can
carry (then the gun is a PowerMeterFailure while it lasts, rather than energy nobody bills).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import attrs
import trio

from dcocpp.clock import ocpp_time
from dcocpp.clock.stationclock import StationClock, TransactionClock
from dcocpp.connector import events
from dcocpp.hardware import interface as hw
from dcocpp.hardware.registercheck import RegisterRun
from dcocpp.ocpp.transactions import LocalTransaction
from dcocpp.ocpp.wire import INT32_MAX

log = logging.getLogger(__name__)

# OCPP 1.6's integer is 32 bits: the highest meter register, in Wh, its messages can carry.
OCPP_MAX_WH = INT32_MAX
REGISTER_BEYOND_OCPP = "register beyond OCPP 1.6's range"  # CiString50: the fault's detail


class Billing:
    """One gun's meter as its transactions bill it (see the module docstring)."""

    def __init__(
        self,
        connector_id: int,
        gun: hw.GunHardware,
        max_power_w: float,
        clock: StationClock,
        look_again: Callable[[], None],
    ):
        self._id = connector_id
        self._gun = gun
        self._max_power_w = max_power_w
        self._clock = clock
        # Asks the connector's loop to look at the gun again soon (a register beyond OCPP's
        # range is raised as a fault by the loop, before anything else: `beyond_ocpp`).
        self._look_again = look_again
        self._beyond_ocpp = False  # the register is above OCPP_MAX_WH
        # Per transaction (local id) until its StopTransaction is queued: the registers it
        # was billed, whether one was refused, its timestamps and how long it has run.
        self._billed: dict[int, RegisterRun] = {}
        self._refused: set[int] = set()
        self._times: dict[int, TransactionClock] = {}

    def open(self, tx: LocalTransaction, times: TransactionClock, meter_start_wh: float) -> None:
        """Transaction `tx` started at `meter_start_wh`, its times kept by `times`."""
        self._times[tx.local_id] = times
        self._billed[tx.local_id] = RegisterRun(
            self._max_power_w, meter_start_wh, trio.current_time()
        )

    def close(self, tx: LocalTransaction) -> None:
        """Transaction `tx`'s StopTransaction is queued (or never will be): forget it."""
        self._billed.pop(tx.local_id, None)
        self._refused.discard(tx.local_id)
        self._times.pop(tx.local_id, None)

    def began(self, tx: LocalTransaction) -> datetime:
        """When `tx` began, on the station's clock as it reads now (`TransactionClock.began`)."""
        return self._times[tx.local_id].began()

    def stamp(self, tx: LocalTransaction | None) -> str:
        """The timestamp of a message now: of transaction `tx`, never earlier than its
        previous one (see `TransactionClock.stamp`)."""
        if tx is None:
            return ocpp_time(self._clock.now())
        return self._times[tx.local_id].stamp()

    def reading(self, tx: LocalTransaction | None) -> hw.MeterReading:
        """The meter now, as transaction `tx` may bill it: its register never below one
        already billed nor above what the gun's rating can have delivered since, whatever
        the hardware says. The PLC driver believes no other register already (it reports the
        meter failure); this holds for any backend, and a refused register is logged."""
        reading = self._gun.read_meter()
        if tx is None or (run := self._billed.get(tx.local_id)) is None:
            return reading
        now = trio.current_time()
        why = run.doubt(reading.energy_wh, now)
        if why is None and reading.energy_wh > OCPP_MAX_WH:
            why = f"meter register {reading.energy_wh:.0f} Wh beyond what OCPP 1.6 can report"
            self._look_again()  # the loop raises the fault (beyond_ocpp) before anything
        if why is None:
            run.add(reading.energy_wh, now)
            return reading
        if tx.local_id not in self._refused:
            self._refused.add(tx.local_id)
            log.error(
                "connector %d: %s: not billed; the transaction bills %.0f Wh at most",
                self._id,
                why,
                run.energy_wh,
            )
        return attrs.evolve(reading, energy_wh=run.energy_wh)

    def beyond_ocpp(self, meter_fault: str | None) -> events.Event | None:
        """A meter register above OCPP 1.6's integer (2,147,483,647 Wh, about 2.1 GWh) cannot
        be carried by StartTransaction, MeterValues or StopTransaction: the gun is a
        PowerMeterFailure while it lasts (no transaction starts; a running one stops at its
        last reading OCPP can carry), rather than energy nobody bills. The fault event when
        that changes, else None (`meter_fault`: the detail of the METER fault the machine
        has now, None without one)."""
        beyond = self._gun.read_meter().energy_wh > OCPP_MAX_WH
        if beyond == self._beyond_ocpp:
            return None
        self._beyond_ocpp = beyond
        if beyond:
            log.error(
                "connector %d: the meter's register is above %d Wh, the most OCPP 1.6 can"
                " report: no transaction starts until the meter is reset or replaced",
                self._id,
                OCPP_MAX_WH,
            )
            return events.FaultRaised(hw.FaultKind.METER, REGISTER_BEYOND_OCPP)
        if meter_fault == REGISTER_BEYOND_OCPP:
            return events.FaultCleared(hw.FaultKind.METER)
        return None
