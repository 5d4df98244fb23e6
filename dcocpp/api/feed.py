"""The station's news on its way to the console's event streams (`GET /api/events`).

The station calls `Feed.changed()` when something the operator watches changed at once (a
connector's status) and `Feed.frame()` for each line of the OCPP message log. Both run on the
station's path and never wait: each open stream has a bounded buffer of frames and a "changed"
flag; a stream that does not keep up loses its oldest frames (and is told how many) and gets
one fresh snapshot for any number of changes. The feed keeps the last `HISTORY` frames, so a
page opened now shows the messages that led here, and the last hour of each gun's power,
current, limit and SoC (`sample`, while the API runs), so its plots start full.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import trio

HISTORY = 500  # frames kept for a page opened later
# The guns' measurements a page opened now plots at once: one point every TREND_INTERVAL
# seconds for the last hour (the page adds its own live points to them).
TREND_INTERVAL = 2.0
TREND_POINTS = 1800
STREAM_BUFFER = 200  # frames waiting for one slow stream before its oldest are dropped


class Stream:
    """One client's view of the feed: frames since it opened, and whether the station
    changed. Only the event stream that opened it reads it."""

    def __init__(self) -> None:
        self.frames: deque[dict[str, Any]] = deque(maxlen=STREAM_BUFFER)
        self.dropped = 0  # frames lost since the stream last took them
        self.changed = False
        self._news = trio.Event()

    def offer(self, entry: dict[str, Any]) -> None:
        if len(self.frames) == self.frames.maxlen:
            self.dropped += 1
        self.frames.append(entry)
        self._news.set()

    def poke(self) -> None:
        self.changed = True
        self._news.set()

    async def wait(self) -> None:
        """Until there is news (the caller bounds it: it looks at the measurements anyway)."""
        await self._news.wait()
        self._news = trio.Event()

    def take_frames(self) -> tuple[list[dict[str, Any]], int]:
        frames, dropped = list(self.frames), self.dropped
        self.frames.clear()
        self.dropped = 0
        return frames, dropped

    def take_changed(self) -> bool:
        changed, self.changed = self.changed, False
        return changed


class Feed:
    """Fan-out of the station's news to any number of streams (see the module docstring)."""

    def __init__(self) -> None:
        self._history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._seq = itertools.count(1)
        self._streams: set[Stream] = set()
        self._trend: dict[int, deque[list[float | None]]] = {}

    @property
    def streams(self) -> int:
        return len(self._streams)

    def changed(self) -> None:
        for stream in self._streams:
            stream.poke()

    def frame(self, direction: str, text: str) -> None:
        """A message-log line: direction `>>` sent, `<<` received, `--` about the link."""
        entry = {
            "seq": next(self._seq),
            "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "direction": direction,
            "text": text,
        }
        self._history.append(entry)
        for stream in self._streams:
            stream.offer(entry)

    def history(self) -> list[dict[str, Any]]:
        return list(self._history)

    def sample(self, snapshot: dict[str, Any], at: float) -> None:
        """Each gun's measurements of `snapshot` (the body of GET /api/status) at `at` (Unix
        time): [at, kW, A, limit A, SoC %], None where there is no value."""
        for entry in snapshot["connectors"]:
            points = self._trend.setdefault(entry["id"], deque(maxlen=TREND_POINTS))
            points.append(
                [
                    round(at, 3),
                    round(entry.get("powerW", 0.0) / 1000, 3),
                    entry.get("currentA"),
                    entry.get("currentLimitA"),
                    entry.get("soc"),
                ]
            )

    def trend(self) -> dict[str, list[list[float | None]]]:
        """Per gun (by id, as text: a JSON object's keys), its sampled points, oldest first."""
        return {str(cid): list(points) for cid, points in self._trend.items()}

    @contextmanager
    def stream(self) -> Iterator[Stream]:
        stream = Stream()
        self._streams.add(stream)
        try:
            yield stream
        finally:
            self._streams.discard(stream)
