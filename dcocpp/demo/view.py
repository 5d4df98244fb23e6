"""What the demo shows: the connectors live, one line per event, and the final summary.

On a terminal the view is a compact table redrawn in place about twice a second (ANSI cursor
movement only, no curses) with the latest events below it. Anywhere else (a pipe, a file,
`--no-live`) it prints one line per event instead: every status change the central system is
told about, with the connector's power and energy at that moment, the driver's actions and the
central system's answers.
"""

from __future__ import annotations

import collections
import logging
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TextIO

import trio

from dcocpp.clock import parse_ocpp_time
from dcocpp.demo.central_system import CsmsEvent, DemoCentralSystem, TransactionRecord

REFRESH_INTERVAL = 0.5
RECENT_EVENTS = 6
# The statuses in which the power is worth showing (elsewhere the relay is open or opening).
_FLOWING = frozenset({"Charging", "SuspendedEV", "SuspendedEVSE"})
_CLEAR_LINE = "\x1b[2K"
_HIDE_CURSOR = "\x1b[?25l"
_SHOW_CURSOR = "\x1b[?25h"


def _cursor_up(lines: int) -> str:
    return f"\x1b[{lines}F" if lines else "\r"


class SnapshotSource(Protocol):
    """What the view reads: dcocpp's `Station` (the body of the API's GET /api/status)."""

    def snapshot(self) -> dict[str, Any]: ...


class DemoView:
    """Shows `station` and `csms` on `out`; `live` selects the redrawn table (a TTY only)."""

    def __init__(
        self,
        station: SnapshotSource,
        csms: DemoCentralSystem,
        out: TextIO,
        *,
        live: bool,
        labels: dict[int, str],
        headline: str,
    ):
        self.station = station
        self.csms = csms
        self.out = out
        self.live = live
        self.labels = labels
        self.headline = headline
        self.steps: dict[int, str] = {}
        self.recent: collections.deque[str] = collections.deque(maxlen=RECENT_EVENTS)
        self._started = trio.current_time()
        self._drawn = 0  # lines of the last frame, to move back over
        self._held: list[str] | None = []  # events before `release()`

    def release(self) -> None:
        """Start showing events (those held back so far first)."""
        held, self._held = self._held or [], None
        for line in held:
            self._show(line)

    # --- input ------------------------------------------------------------------------------

    def step(self, connector_id: int, text: str, *, announce: bool = True) -> None:
        """The driver (or EV) at a gun does something: shown in the gun's row of the table,
        and as an event unless `announce` is False."""
        self.steps[connector_id] = text
        if announce:
            self._event(f"gun {connector_id}: {text}")

    def note(self, text: str) -> None:
        self._event(text)

    def csms_event(self, event: CsmsEvent) -> None:
        if event.action == "StatusNotification" and event.connector_id:
            self._event(self._status_line(event.connector_id))
        elif event.action == "StatusNotification":
            return  # the charge point as a whole (connector 0): not news in the demo
        else:
            self._event(f"central system: {event.text}")

    def _event(self, text: str) -> None:
        line = f"[{self.elapsed():5.1f}s] {text}"
        if self._held is not None:
            self._held.append(line)
        else:
            self._show(line)

    def _show(self, line: str) -> None:
        if self.live:
            self.recent.append(line)
        else:
            print(line, file=self.out, flush=True)

    def elapsed(self) -> float:
        return trio.current_time() - self._started

    def _connector(self, connector_id: int) -> dict[str, Any] | None:
        for entry in self.station.snapshot()["connectors"]:
            if entry["id"] == connector_id:
                return dict(entry)
        return None

    def _status_line(self, connector_id: int) -> str:
        record = self.csms.statuses.get(connector_id)
        status = record.status if record is not None else "?"
        text = f"connector {connector_id}: {status}"
        if record is not None and record.error_code != "NoError":
            text += f" ({record.error_code})"
        entry = self._connector(connector_id)
        tx = _current_transaction(self.csms, connector_id)
        if entry is None or tx is None or not tx.active:
            return text
        details = [f"transaction {tx.transaction_id}"]
        if status in _FLOWING:
            details.append(f"{entry['powerW'] / 1000:.1f} kW")
        energy = _session_energy_wh(tx, entry)
        if energy is not None:
            details.append(f"{energy / 1000:.3f} kWh")
        return f"{text:<32} " + ", ".join(details)

    # --- the live table ---------------------------------------------------------------------

    async def run(self) -> None:
        """Redraw the table until cancelled (live mode only; otherwise returns at once)."""
        if not self.live:
            return
        self.out.write(_HIDE_CURSOR)
        try:
            while True:
                self.draw()
                await trio.sleep(REFRESH_INTERVAL)
        finally:
            self.out.write(_SHOW_CURSOR)
            self.out.flush()

    def draw(self) -> None:
        """Draw (or redraw over the previous) frame; a no-op unless live."""
        if not self.live:
            return
        width = max(40, shutil.get_terminal_size((100, 24)).columns - 1)
        # A line wider than the terminal would wrap and break the cursor arithmetic.
        lines = [line[:width] for line in self.frame()]
        parts = [_cursor_up(self._drawn)] if self._drawn else []
        parts.extend(f"{_CLEAR_LINE}{line}\n" for line in lines)
        self.out.write("".join(parts))
        self.out.flush()
        self._drawn = len(lines)

    def frame(self) -> list[str]:
        snapshot = self.station.snapshot()
        cp = snapshot["chargePoint"]
        link = cp["registration"] if cp["connected"] else "not connected"
        lines = [f"{self.headline}   t={self.elapsed():5.1f} s   charge point {cp['id']}: {link}"]
        rows = [["gun", "label", "status", "tx", "idTag", "kW", "kWh", "SoC", "driver / EV"]]
        for entry in snapshot["connectors"]:
            cid = entry["id"]
            tx = _current_transaction(self.csms, cid)
            energy = _session_energy_wh(tx, entry)
            rows.append(
                [
                    str(cid),
                    self.labels.get(cid, ""),
                    entry["status"] + ("" if entry["errorCode"] == "NoError" else "!"),
                    str(entry["transactionId"]) if entry["transactionId"] is not None else "-",
                    entry["idTag"] or "-",
                    f"{entry['powerW'] / 1000:.1f}",
                    "-" if energy is None else f"{energy / 1000:.3f}",
                    "-" if entry["soc"] is None else f"{entry['soc']:.1f}%",
                    self.steps.get(cid, ""),
                ]
            )
        lines.extend(_table(rows, numeric={0, 3, 5, 6, 7}, indent="  "))
        lines.append("")
        events = list(self.recent)
        lines.extend(events + [""] * (RECENT_EVENTS - len(events)))
        return lines

    # --- warnings inside the live view ------------------------------------------------------

    @contextmanager
    def capturing_logs(self, logger_name: str = "dcocpp") -> Iterator[None]:
        """While live, show this logger's warnings among the events instead of letting them
        scribble over the table; otherwise leave logging alone."""
        if not self.live:
            yield
            return
        logger = logging.getLogger(logger_name)
        handler = _ViewHandler(self)
        handler.setLevel(logging.WARNING)
        propagate = logger.propagate
        logger.addHandler(handler)
        logger.propagate = False
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.propagate = propagate


class _ViewHandler(logging.Handler):
    def __init__(self, view: DemoView):
        super().__init__()
        self._view = view

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._view.note(f"{record.levelname.lower()}: {record.getMessage()}")
        except Exception:  # a logging handler must never raise into the caller
            self.handleError(record)


# --- helpers shared with the summary ------------------------------------------------------------


def _current_transaction(csms: DemoCentralSystem, connector_id: int) -> TransactionRecord | None:
    """The connector's running transaction, else its last one."""
    mine = [t for t in csms.transactions if t.connector_id == connector_id]
    active = [t for t in mine if t.active]
    if active:
        return active[-1]
    return mine[-1] if mine else None


def _session_energy_wh(tx: TransactionRecord | None, entry: dict[str, Any]) -> float | None:
    if tx is None:
        return None
    if tx.active:
        return max(0.0, entry["energyWh"] - tx.meter_start)
    return tx.energy_wh


def _widths(rows: Sequence[Sequence[str]]) -> list[int]:
    return [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]


def _table(rows: Sequence[Sequence[str]], *, numeric: set[int], indent: str = "") -> list[str]:
    widths = _widths(rows)
    lines = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _clock_time(timestamp: str | None) -> str:
    """`2025-06-01T12:00:05.123Z` -> `12:00:05` (the date is in the summary's heading)."""
    if timestamp is None:
        return "-"
    try:
        return parse_ocpp_time(timestamp).strftime("%H:%M:%S")
    except ValueError:
        return timestamp


def _date(timestamp: str) -> str:
    try:
        return parse_ocpp_time(timestamp).strftime("%Y-%m-%d")
    except ValueError:
        return "?"


def format_summary(csms: DemoCentralSystem) -> str:
    """The transactions the central system recorded, with the total energy delivered."""
    transactions = csms.transactions
    if not transactions:
        lines = ["The central system recorded no transaction."]
    else:
        day = _date(transactions[0].started_at)
        lines = [f"Transactions recorded by the central system (times UTC, {day}):", ""]
        rows = [["id", "gun", "idTag", "start", "stop", "reason", "kWh", "meter values"]]
        total_wh = 0
        for tx in transactions:
            energy = tx.energy_wh
            if energy is not None:
                total_wh += energy
            rows.append(
                [
                    str(tx.transaction_id),
                    str(tx.connector_id),
                    tx.id_tag,
                    _clock_time(tx.started_at),
                    _clock_time(tx.stopped_at),
                    tx.reason or "(running)",
                    "-" if energy is None else f"{energy / 1000:.3f}",
                    str(tx.meter_value_messages),
                ]
            )
        lines.extend(_table(rows, numeric={0, 1, 6, 7}, indent="  "))
        widths = _widths(rows)
        kwh_end = 2 + sum(widths[:7]) + 2 * 6  # where the kWh column ends
        total = f"{total_wh / 1000:.3f}"
        lines.append("  total".ljust(kwh_end - len(total)) + total + " kWh")
    refused = [a for a in csms.authorizations if a.status.value != "Accepted"]
    for auth in refused:
        lines.append(f"Refused: {auth.id_tag} (Authorize: {auth.status.value}), no transaction.")
    return "\n".join(lines)
