"""Run a whole `Station` against a `FakeCsms` on the in-memory network, for autojump tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from dcocpp.config import ChargerConfig, load_charger_config
from dcocpp.station import USER_CONFIG_NAME, Station
from tests.csms import FakeCsms, MemoryNetwork

REPO = Path(__file__).resolve().parents[1]
CSMS_URL = "ws://csms.test/ocpp"


def charger_config(tmp_path: Path, **connector_changes: Any) -> ChargerConfig:
    """The shipped 2-gun configuration with state and logs under tmp_path."""
    return load_charger_config(
        REPO / "configs" / "charger.json",
        csms=CSMS_URL,
        data_dir=tmp_path / "data",
        log_dir=tmp_path / "logs",
    )


def preset_keys(config: ChargerConfig, **keys: Any) -> None:
    """OCPP keys as if a central system had changed them before this start."""
    path = config.data_dir / USER_CONFIG_NAME
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update({k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in keys.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current))


@attrs.define
class Harness:
    station: Station
    csms: FakeCsms
    network: MemoryNetwork
    nursery: trio.Nursery

    @property
    def store(self) -> Any:
        return self.station.store

    async def csms_call(self, payload: Any) -> Any:
        rpc = await self.csms.wait_connected()
        return await rpc.call(payload)

    async def csms_call_raw(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        rpc = await self.csms.wait_connected()
        return await rpc.call_raw(action, body)


@asynccontextmanager
async def running_station(
    config: ChargerConfig, csms: FakeCsms | None = None, *, ping: int = 0
) -> AsyncIterator[Harness]:
    """A started station; by default without WebSocket pings (tests that want them say so)."""
    csms = csms or FakeCsms()
    preset_keys(config, WebSocketPingInterval=ping)
    async with trio.open_nursery() as nursery:
        network = MemoryNetwork(csms, nursery)
        station = Station(config, open_stream=network.open_stream)
        harness = Harness(station, csms, network, nursery)
        await nursery.start(station.run)
        yield harness
        nursery.cancel_scope.cancel()
