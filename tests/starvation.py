"""How late a loaded machine lets the test process run, for the tests that measure in wall time
how long the event loop stood still."""

from __future__ import annotations

import threading
import time


class Starvation:
    """How late the machine let this process run: a thread that sleeps TICK at a time and
    records its longest oversleep. The loop blocking does not delay it (a blocking call
    releases the GIL, and a busy thread must hand it over every few milliseconds), a machine
    too loaded to schedule the process does: that much of a keep-alive gap is not the
    charger's. (A C call that holds the GIL for long, e.g. encoding a huge JSON document, delays
    this thread too and so is excused here: the longest step on the loop, in the failure
    message, is where to look for that.)"""

    TICK = 0.01

    def __init__(self) -> None:
        self.longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Starvation:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.is_set():
            began = time.perf_counter()
            time.sleep(self.TICK)
            self.longest = max(self.longest, time.perf_counter() - began - self.TICK)
