"""The station's wall clock (`StationClock`) and each transaction's (`TransactionClock`), on
trio's monotonic clock (and `TrioWallClock`, a wall clock that runs with it, for tests).

Two clocks, each for what it is good at:

- The monotonic clock (trio's, `trio.current_time()`) measures durations and runs every timer
  that waits for one: the metering intervals, the 10 s meter checkpoints, ConnectionTimeOut,
  the time a transaction has run (its Relative charging profiles count from there), retries
  and heartbeats. Nothing sets it, so a step of the wall clock changes none of them.
- The wall clock says what time it is: every OCPP timestamp, and the instants the central
  system gives (a profile's startSchedule and validFrom/validTo, a reservation's or an
  idTagInfo's expiryDate, ClockAlignedDataInterval's grid). A timer that waits for such an
  instant sleeps on the monotonic clock and looks at the wall clock again when it steps
  (`StationClock.subscribe`), or at least every minute (reservations).

The station's wall clock is the system's (`SystemClock`) plus an offset. dcocpp cannot and
must not set the operating system's clock (no privilege; NTP or chrony owns it): when the
central system's currentTime (BootNotification.conf, Heartbeat.conf) differs from the station's
by more than `SYNC_THRESHOLD_S` plus half the round trip of that CALL, the offset is set so
that the station's clock reads the central system's time (`follow`), logged at WARNING with
the old and the new time. 5 s is above what the measurement can tell (a currentTime often comes
in whole seconds, and the answer's way back takes up to half the round trip, which is
corrected for) and below what a tariff by the minute or a reservation notices. On a charger
whose system clock NTP keeps right, the central system's time agrees and no correction
happens. A central system whose time is implausible (before `EARLIEST` or from `LATEST` on)
is not followed, nor followed again within `FOLLOW_INTERVAL_S`: a central system that
answers triggered Heartbeats with flapping times moves the clock once a minute at most.

A step of the system clock itself (NTP stepping it, an operator's `date -s`) shows as the
wall clock moving against the monotonic one by more than `STEP_TOLERANCE_S` plus the slew
that NTP may apply meanwhile (`SLEW_RATE`); `watch` looks every `CHECK_INTERVAL_S`, and every
reading of the clock looks too. It is logged at WARNING and the subscribers are told; an
offset that the step makes unnecessary (the system clock now reads what the central system
said) is dropped. Either kind of step is a `ClockStep` to the subscribers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import attrs
import trio

from dcocpp.clock import SystemClock, WallClock, ocpp_time

log = logging.getLogger(__name__)

# The station's clock follows the central system's when they differ by more than this (s),
# beyond half the round trip of the CALL that brought its time (see the module docstring).
SYNC_THRESHOLD_S = 5.0
# The central system's time is followed at most this often (monotonic s).
FOLLOW_INTERVAL_S = 60.0
# A central system's time outside [EARLIEST, LATEST) is wrong: not followed.
EARLIEST = datetime(2020, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
# The system clock stepped when it moved against the monotonic clock by more than this (s)
# plus SLEW_RATE x the time since it was last read: NTP slews by up to 500 ppm, a crystal
# drifts by some ppm more.
STEP_TOLERANCE_S = 1.0
SLEW_RATE = 0.001
# How often `watch` reads the system clock to notice a step while nothing else does (s).
CHECK_INTERVAL_S = 2.0


@attrs.frozen
class ClockStep:
    """The station's clock moved: from `before` to `after`, by the system clock (NTP, an
    operator) or by following the central system."""

    before: datetime
    after: datetime
    system: bool

    @property
    def seconds(self) -> float:
        return (self.after - self.before).total_seconds()

    def describe(self) -> str:
        who = "the system clock was set" if self.system else "set to the central system's time"
        return f"{ocpp_time(self.before)} -> {ocpp_time(self.after)} ({self.seconds:+.1f} s; {who})"


Listener = Callable[[ClockStep], None]


class StationClock:
    """The station's wall clock: `source` (the system's) plus the offset the central system's
    time gave (see the module docstring). Read it inside `trio.run` (the monotonic clock it
    compares with is trio's); outside, steps of the source are not noticed."""

    def __init__(self, source: WallClock | None = None):
        self._source = source or SystemClock()
        self.offset = timedelta(0)
        self._listeners: list[Listener] = []
        # The source's time minus the monotonic time when it was last read, and when (trio).
        self._skew: float | None = None
        self._read_at = 0.0
        self._next_follow = float("-inf")

    def now(self) -> datetime:
        system = self._source.now()
        self._notice_step(system)
        return system + self.offset

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(step)` after every step of the clock (synchronously, from whoever
        read the clock: it must not raise, nor block); returns the unsubscriber."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def watch(self) -> None:
        """Read the clock every CHECK_INTERVAL_S until cancelled, so that a step of the
        system clock is noticed (and told) while nothing else reads it."""
        while True:
            self.now()
            await trio.sleep(CHECK_INTERVAL_S)

    def follow(self, central: datetime, round_trip_s: float, source: str) -> ClockStep | None:
        """The central system's time `central` arrived in the answer to `source` (e.g.
        "Heartbeat"), `round_trip_s` after the CALL went out: follow it if the station's clock
        differs by more than the threshold (see the module docstring). Returns the step."""
        if not EARLIEST <= central < LATEST:
            log.warning(
                "the central system's time %s (%s.conf) is not plausible: not followed",
                ocpp_time(central),
                source,
            )
            return None
        before = self.now()
        # The answer was written about half the round trip ago.
        estimate = central + timedelta(seconds=round_trip_s / 2)
        difference = estimate - before
        seconds = difference.total_seconds()
        if abs(seconds) <= SYNC_THRESHOLD_S + round_trip_s / 2:
            return None
        monotonic = trio.current_time()
        if monotonic < self._next_follow:
            log.info(
                "the central system's time %s (%s.conf) differs by %+.1f s; not followed again"
                " within %g s",
                ocpp_time(central),
                source,
                seconds,
                FOLLOW_INTERVAL_S,
            )
            return None
        self._next_follow = monotonic + FOLLOW_INTERVAL_S
        self.offset += difference
        step = ClockStep(before, before + difference, system=False)
        log.warning(
            "clock: following the central system's time (%s.conf, %.3f s round trip, half of"
            " it added): %s",
            source,
            round_trip_s,
            step.describe(),
        )
        self._tell(step)
        return step

    def _notice_step(self, system: datetime) -> None:
        try:
            monotonic = trio.current_time()
        except RuntimeError:
            return  # outside trio.run: nothing to compare with
        skew = system.timestamp() - monotonic
        previous, read_at = self._skew, self._read_at
        self._skew, self._read_at = skew, monotonic
        if previous is None:
            return
        jump = skew - previous
        if abs(jump) <= STEP_TOLERANCE_S + SLEW_RATE * (monotonic - read_at):
            return
        before = system - timedelta(seconds=jump) + self.offset
        if self.offset and abs((self.offset - timedelta(seconds=jump)).total_seconds()) <= (
            SYNC_THRESHOLD_S
        ):
            # The system clock now reads what the central system said: no offset needed.
            log.info("clock: the system clock now agrees with the central system's time")
            self.offset = timedelta(0)
        step = ClockStep(before, system + self.offset, system=True)
        log.warning("clock: the system clock stepped: %s", step.describe())
        self._tell(step)

    def _tell(self, step: ClockStep) -> None:
        for listener in list(self._listeners):
            listener(step)


class TransactionClock:
    """The times of one transaction: when its messages are stamped (`stamp`: never earlier
    than its StartTransaction and its previous message), and how long it has run (monotonic).
    Made when it starts; it ends with the process (a transaction never outlives it)."""

    def __init__(self, clock: WallClock, name: str):
        self._clock = clock
        self._name = name  # for the log: "connector 1"
        self._began = trio.current_time()
        self._last = clock.now()
        self._behind = False  # the clock is behind the last stamp (logged once)
        self.started_at = ocpp_time(self._last)

    def stamp(self) -> str:
        """The timestamp of the transaction's next message: the station's time, or the last
        one used while the clock is behind it (it stepped back)."""
        now = self._clock.now()
        if now < self._last:
            if not self._behind:
                self._behind = True
                log.warning(
                    "%s: the clock is %.1f s behind the transaction's last message (%s): its"
                    " messages keep that time until the clock catches up",
                    self._name,
                    (self._last - now).total_seconds(),
                    ocpp_time(self._last),
                )
            return ocpp_time(self._last)
        self._behind = False
        self._last = now
        return ocpp_time(now)

    def elapsed(self) -> float:
        """Seconds the transaction has run, by the monotonic clock."""
        return trio.current_time() - self._began

    def began(self) -> datetime:
        """When the transaction began on the station's clock as it reads now: now minus the
        time it has run. Its Relative charging profiles start there, so that a step of the
        wall clock changes neither their elapsed time nor their limit."""
        return self._clock.now() - timedelta(seconds=self.elapsed())


class TrioWallClock:
    """Wall-clock time that advances with trio's clock: under `autojump_clock` a day of
    clock-aligned meter values passes in milliseconds and stays on the grid."""

    def __init__(self, start: datetime):
        self._start = start
        self._origin = trio.current_time()
        # What the clock has been set by (a test steps it, as NTP or an operator would).
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return self._start + timedelta(seconds=trio.current_time() - self._origin) + self.offset
