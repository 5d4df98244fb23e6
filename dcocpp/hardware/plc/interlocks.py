"""The emulated PLC's interlocks, without I/O: what lets it close its relay, and the faults it
latches (RelayStatus `FAULT_REASON`), as README.md ("Firmware behaviour") describes them.
`emulator.PlcEmulator` feeds them (the host's RelayControl, its debounced safety inputs, its
watchdog) and reports them.
"""

from __future__ import annotations

__all__ = [
    "FAULT_CRC_FAILURE",
    "FAULT_EARTH_FAULT",
    "FAULT_ESTOP",
    "FAULT_NONE",
    "FAULT_RELAY_TIMEOUT",
    "FAULT_REMOTE_FORCE_OFF",
    "DebouncedInput",
    "Interlocks",
]

# FAULT_REASON
FAULT_NONE = 0
FAULT_RELAY_TIMEOUT = 1
FAULT_CRC_FAILURE = 3
FAULT_ESTOP = 4
FAULT_EARTH_FAULT = 5
FAULT_REMOTE_FORCE_OFF = 6


class DebouncedInput:
    """A safety input: what its switch says (`raw`) and what the firmware believes (`stable`,
    once `raw` has held for the debounce time)."""

    def __init__(self) -> None:
        self.raw = False
        self.stable = False


class Interlocks:
    """The estop and earth-fault inputs, the host's FORCE_ALL_OFF and SYS_ENABLE (of its last
    RelayControl), the watchdog's COMM_FAULT, and the latched FAULT_REASONs, oldest first."""

    def __init__(self) -> None:
        self.estop = DebouncedInput()
        self.earth = DebouncedInput()
        self.force_off = False
        self.sys_enable = True
        self.comm_fault = False
        self._latched: list[int] = []

    @property
    def safety_ok(self) -> bool:
        return not (self.estop.stable or self.earth.stable)

    @property
    def closing_allowed(self) -> bool:
        return (
            self.safety_ok
            and self.sys_enable
            and not self.force_off
            and not self.comm_fault
            and not self._latched
        )

    @property
    def fault_reason(self) -> int:
        """The oldest latched fault; else 6 while the host forces all off."""
        if self._latched:
            return self._latched[0]
        return FAULT_REMOTE_FORCE_OFF if self.force_off else FAULT_NONE

    @property
    def switch_states(self) -> int:
        """SW_STATES: input 0 the estop, input 1 the earth-fault monitor."""
        return int(self.estop.stable) | int(self.earth.stable) << 1

    def latch(self, reason: int) -> None:
        if reason not in self._latched:
            self._latched.append(reason)

    def settle(self, which: DebouncedInput) -> bool:
        """`which` has kept its raw value for the debounce time: the firmware believes it.
        True when that changed; an input that became active latches its fault."""
        if which.stable == which.raw:
            return False
        which.stable = which.raw
        if which.stable:
            self.latch(FAULT_ESTOP if which is self.estop else FAULT_EARTH_FAULT)
        return True

    def clear_faults(self) -> None:
        """CLEAR_FAULTS: drop every latched fault whose cause is gone. It arrives in a
        RelayControl, so the host's traffic is back by definition."""
        self.comm_fault = False
        gone = {FAULT_RELAY_TIMEOUT, FAULT_CRC_FAILURE}
        if not self.estop.stable:
            gone.add(FAULT_ESTOP)
        if not self.earth.stable:
            gone.add(FAULT_EARTH_FAULT)
        self._latched = [reason for reason in self._latched if reason not in gone]
