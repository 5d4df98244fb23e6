"""Whether a meter's import register can be believed: what a gun of a given rating can have
delivered between two readings. Pure (times are seconds of any monotonic clock, e.g. trio's).

A register is believed when it is not lower than any believed reading before it, and has not
risen faster than the gun's rating allows since any of them:

    0 <= register - earlier <= maxPowerW x (elapsed + JITTER_S) / 3600 + RESOLUTION_WH

- `RESOLUTION_WH`: the CAN contract's register step (0.1 kWh). A register floored to it can
  show up to one step more than what was delivered since an earlier reading.
- `JITTER_S`: a reading's time is when the host took it, not when the meter measured it (CAN
  latency, the reader's batching, a busy event loop, a connector sampling a value up to two
  meter frames old).

`RegisterRun` is one run of readings believed together (the connectors keep one per
transaction: what they bill); `RegisterGuard` is a meter's whole story, with doubt and
recovery (the PLC driver keeps one per gun).
"""

from __future__ import annotations

import math

__all__ = ["JITTER_S", "RESOLUTION_WH", "SETTLE_S", "RegisterGuard", "RegisterRun"]

RESOLUTION_WH = 100.0
JITTER_S = 2.0
# How long a doubted meter's readings must be consistent again before it is believed again.
SETTLE_S = 10.0


class RegisterRun:
    """Readings believed together, from a first one (`started_at`); `energy_wh` and `at` are
    the latest. A rise is checked against every earlier reading at once: the one it is bound
    by most is the one with the least `energy_wh - rate x at`, kept as `_base`."""

    def __init__(self, max_power_w: float, energy_wh: float, at: float):
        if not (math.isfinite(max_power_w) and max_power_w > 0):
            raise ValueError(f"max_power_w must be > 0, not {max_power_w}")
        self._rate = max_power_w / 3600  # Wh per second
        self.energy_wh = energy_wh
        self.at = self.started_at = at
        self._base = (energy_wh, at)

    def doubt(self, energy_wh: float, at: float) -> str | None:
        """Why a reading `energy_wh` taken at `at` cannot follow this run (None: it can)."""
        if not math.isfinite(energy_wh):
            return f"meter register unreadable ({energy_wh})"
        if energy_wh < self.energy_wh:
            return f"meter register went back {self.energy_wh - energy_wh:.0f} Wh"
        base_wh, base_at = self._base
        if energy_wh - base_wh > self._rate * (at - base_at + JITTER_S) + RESOLUTION_WH:
            return f"meter register rose {energy_wh - base_wh:.0f} Wh in {at - base_at:.1f} s"
        return None

    def add(self, energy_wh: float, at: float) -> None:
        """Append a reading `doubt` found plausible."""
        self.energy_wh, self.at = energy_wh, at
        base_wh, base_at = self._base
        if energy_wh - self._rate * at < base_wh - self._rate * base_at:
            self._base = (energy_wh, at)


class RegisterGuard:
    """Which register a meter is believed at (`energy_wh`, None before its first reading), and
    why it is not believed now (`doubt`, None: it is).

    `feed` every register the meter reports; `distrust` when the meter itself says its values
    are wrong (e.g. OVERRANGE). The first readable one is believed. A reading that cannot follow
    the believed run is not taken and starts a doubt; readings that can follow it still are
    (a glitch does not freeze the register). The doubt ends once the meter's readings have
    formed one consistent run for `settle` seconds without being distrusted: that run is
    believed from then on, so a glitch that passed and a register that was reset or replaced
    and counts consistently again both recover, while a meter that keeps contradicting itself
    stays doubted."""

    def __init__(self, max_power_w: float, *, settle: float = SETTLE_S):
        self._max_power_w = max_power_w
        self._settle = settle
        self._believed: RegisterRun | None = None
        self._candidate: RegisterRun | None = None  # the readings since the doubt, if consistent
        self.doubt: str | None = None

    @property
    def energy_wh(self) -> float | None:
        return None if self._believed is None else self._believed.energy_wh

    def feed(self, energy_wh: float, at: float) -> None:
        believed = self._believed
        if believed is None:
            if math.isfinite(energy_wh):
                self._believed = RegisterRun(self._max_power_w, energy_wh, at)
            return
        why = believed.doubt(energy_wh, at)
        if why is None:
            believed.add(energy_wh, at)
        elif self.doubt is None:
            self.doubt = why
        if self.doubt is None:
            return
        candidate = self._candidate
        if candidate is None or candidate.doubt(energy_wh, at) is not None:
            if math.isfinite(energy_wh):
                self._candidate = RegisterRun(self._max_power_w, energy_wh, at)
            return
        candidate.add(energy_wh, at)
        if at - candidate.started_at >= self._settle:
            self._believed, self._candidate, self.doubt = candidate, None, None

    def distrust(self, why: str) -> None:
        """The meter says its own values are wrong: doubted, and its readings so far do not
        count towards believing it again."""
        if self.doubt is None:
            self.doubt = why
        self._candidate = None
