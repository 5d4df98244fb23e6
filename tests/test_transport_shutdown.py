"""The WebSocket client must end when its caller is cancelled at any moment of connecting (a
station stopped or soft-reset while a connection attempt is under way)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from dcocpp.ocpp import transport


async def test_cancel_while_connecting_ends_the_client(
    autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Spy on the reader nursery's scope (behaviour unchanged) so that a leaked, shielded
    # reader can be released after the check instead of hanging the test.
    leaked: list[trio.CancelScope] = []
    real = transport._shielded_nursery

    class Spy:
        def __init__(self, status: Any):
            self._status = status

        def started(self, value: Any = None) -> None:
            leaked.append(value[1])
            self._status.started(value)

    async def spy(*, task_status: Any) -> None:
        await real(task_status=Spy(task_status))

    monkeypatch.setattr(transport, "_shielded_nursery", spy)
    scope = trio.CancelScope()
    finished = trio.Event()

    async def open_stream(host: str, port: int) -> trio.abc.Stream:
        client, _server = trio.testing.memory_stream_pair()
        scope.cancel()  # the station goes away just as the TCP connection is up
        return client

    async def client() -> None:
        with scope:
            await transport.run_client(
                "ws://csms.test/ocpp", charge_point_id="CP-1", open_stream=open_stream
            )
        finished.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        with trio.move_on_after(60):
            await finished.wait()
        ended = finished.is_set()
        for leaked_scope in leaked:
            leaked_scope.cancel()
    assert ended, "run_client did not end after its caller was cancelled"
