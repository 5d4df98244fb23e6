"""How the PLC driver believes and reports a gun's faults. Pure: no trio, no bus, no clock.

- `SafetyInput`: a safety bit as the host believes it, fail-safe (tripped by one frame,
  released only by several clear frames in a row); `SafetyInputs`: a PLC's three, and the
  faults they raise.
- `FaultBook`: the gun's faults, at most one per kind; several causes can feed one fault (the
  link lost, the PLC's own FAULT_REASON, a bus error), which is raised with the first cause's
  detail and cleared once no cause is left. Every change is one hardware event.
"""

from __future__ import annotations

from dcocpp.hardware.interface import FaultCleared, FaultKind, FaultRaised, HardwareEvent

__all__ = ["FaultBook", "SafetyInput", "SafetyInputs"]


class SafetyInput:
    """A safety bit as the host believes it: fail-safe, so it trips on the first frame that
    reports it (the PLC has debounced its input already, and a spurious trip only opens a
    relay) and is released only once `frames` consecutive frames report it gone, so that one
    glitching frame cannot re-enable a relay."""

    def __init__(self, frames: int):
        self._frames = frames
        self.value = False
        self._clear_count = 0

    def feed(self, value: bool) -> bool:
        """Feed one frame's value; True when the accepted value changed."""
        if value:
            self._clear_count = 0
            if not self.value:
                self.value = True
                return True
            return False
        if self.value:
            self._clear_count += 1
            if self._clear_count >= self._frames:
                self.value = False
                self._clear_count = 0
                return True
        return False


class FaultBook:
    """One gun's active faults (`active`: kind -> detail) and the causes behind the kinds that
    have several (`causes[kind]`: cause name -> detail, oldest first)."""

    def __init__(self) -> None:
        self.active: dict[FaultKind, str] = {}
        self.causes: dict[FaultKind, dict[str, str]] = {
            FaultKind.COMMUNICATION: {},
            FaultKind.METER: {},
            FaultKind.POWER_SWITCH: {},
        }

    def set(self, kind: FaultKind, detail: str | None) -> list[HardwareEvent]:
        """Record a fault as active (detail) or gone (None); the event only on a change."""
        if detail is None:
            if self.active.pop(kind, None) is None:
                return []
            return [FaultCleared(kind)]
        if kind in self.active:
            return []
        self.active[kind] = detail
        return [FaultRaised(kind, detail)]

    def cause(self, kind: FaultKind, cause: str, detail: str | None) -> list[HardwareEvent]:
        """One cause of the fault `kind` active (detail) or gone (None): the fault is raised
        with the first cause's detail and cleared when no cause is left."""
        causes = self.causes[kind]
        if detail is None:
            causes.pop(cause, None)
        else:
            causes.setdefault(cause, detail)
        first = next(iter(causes.values()), None)
        if first is None or kind not in self.active:
            return self.set(kind, first)
        return []


class SafetyInputs:
    """One PLC's safety inputs as the host believes them (`estop`, `earth`, and `chain`: the
    safety chain open for a reason that is neither), fed by every frame that carries them, and
    the faults they raise in `faults`: EARTH_FAULT, and EMERGENCY_STOP for an estop or an open
    chain (together one fault, cleared once both are released)."""

    def __init__(self, plc_id: int, frames: int, faults: FaultBook):
        self._plc_id = plc_id
        self._faults = faults
        self.estop = SafetyInput(frames)
        self.earth = SafetyInput(frames)
        self.chain = SafetyInput(frames)

    @property
    def tripped(self) -> bool:
        return self.estop.value or self.earth.value or self.chain.value

    def feed(self, *, estop: bool, earth: bool, chain: bool, switches: int) -> list[HardwareEvent]:
        """One frame's inputs (`switches`: its switch states, for the detail)."""
        events: list[HardwareEvent] = []
        if self.earth.feed(earth):
            events += self._faults.set(
                FaultKind.EARTH_FAULT,
                f"PLC {self._plc_id}: earth fault" if self.earth.value else None,
            )
        # An open safety chain for another reason is reported as an emergency stop too.
        if self.estop.feed(estop) | self.chain.feed(chain):
            detail = None
            if self.estop.value:
                detail = f"PLC {self._plc_id}: emergency stop"
            elif self.chain.value:
                detail = f"PLC {self._plc_id}: safety chain open (switches 0x{switches:02x})"
            events += self._faults.set(FaultKind.EMERGENCY_STOP, detail)
        return events
