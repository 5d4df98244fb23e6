"""The station: the nursery tree that is the life of the process (see DESIGN.md).

`Station.run()` opens the database, loads the OCPP configuration keys and starts the OCPP
session; a soft Reset cancels that nursery and builds it again from the configuration files, a
hard Reset ends `run()` with `HardReset` so that the process exits and its supervisor restarts it.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence

import trio
from ocpp.v16.enums import AvailabilityStatus, ChargePointStatus, ResetStatus, ResetType

from dcocpp.config import ChargerConfig
from dcocpp.ocpp import transport
from dcocpp.ocpp.configuration import ConfigurationStore
from dcocpp.ocpp.control import ConnectorStatus
from dcocpp.ocpp.session import ChargePointSession, Identity, utc_now
from dcocpp.storage import Database

log = logging.getLogger(__name__)

USER_CONFIG_NAME = "ocpp16-user-config.json"


class HardReset(Exception):
    """The central system asked for a hard reset: the process must exit and be restarted."""


def client_ssl_context(config: ChargerConfig) -> ssl.SSLContext:
    """TLS for wss:// (OCPP 1.6 security profiles 2/3 require TLS 1.2 or newer)."""
    bundle = config.security.csms_ca_bundle
    context = ssl.create_default_context(cafile=str(bundle) if bundle.is_file() else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def load_configuration_store(config: ChargerConfig) -> ConfigurationStore:
    return ConfigurationStore.load(
        config.ocpp_config_path,
        config.data_dir / USER_CONFIG_NAME,
        patches={
            "ChargePointId": config.charge_point.id,
            "CentralSystemURI": config.charge_point.central_system_uri,
            "NumberOfConnectors": len(config.connectors),
        },
    )


class Station:
    """Implements `ChargePointControl` for the OCPP session."""

    def __init__(self, config: ChargerConfig, *, open_stream: transport.OpenStream | None = None):
        self.config = config
        self._open_stream = open_stream
        self._scope: trio.CancelScope | None = None
        self._reset: ResetType | None = None
        self.session: ChargePointSession | None = None
        self.store: ConfigurationStore | None = None
        self._db: Database | None = None
        # connector id (0 = charge point) -> operative; loaded from the database at start.
        self._operative: dict[int, bool] = {}
        self.started = trio.Event()

    @property
    def connector_ids(self) -> Sequence[int]:
        return [c.id for c in self.config.connectors]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; raises `HardReset` when a hard reset was accepted."""
        while True:
            kind = await self._run_once(task_status)
            task_status = trio.TASK_STATUS_IGNORED
            if kind == ResetType.hard:
                raise HardReset()
            log.info("soft reset: restarting the station")

    async def _run_once(self, task_status: trio.TaskStatus[None]) -> ResetType | None:
        config = self.config
        self._reset = None
        self.store = load_configuration_store(config)
        self._db = Database.open(config.data_dir)
        try:
            saved = self._db.availability()
            self._operative = {
                cid: saved.get(cid, (True, None))[0] for cid in [0, *self.connector_ids]
            }
            cp = config.charge_point
            self.session = ChargePointSession(
                Identity(cp.id, cp.vendor, cp.model, cp.firmware_version, cp.serial_number),
                cp.central_system_uri,
                self.store,
                self,
                ssl_context=client_ssl_context(config)
                if cp.central_system_uri.startswith("wss")
                else None,
                open_stream=self._open_stream,
            )
            with trio.CancelScope() as self._scope:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.session.run)
                    log.info(
                        "station %s up: %d connectors, central system %s",
                        cp.id,
                        len(config.connectors),
                        cp.central_system_uri,
                    )
                    self.started.set()
                    task_status.started()
        finally:
            self._db.close()
        return self._reset

    # --- ChargePointControl ------------------------------------------------------------------

    def statuses(self) -> list[ConnectorStatus]:
        now = utc_now()
        return [
            ConnectorStatus(cid, self._status(cid), timestamp=now)
            for cid in [0, *self.connector_ids]
        ]

    def _status(self, connector_id: int) -> ChargePointStatus:
        operative = self._operative.get(0, True) and self._operative.get(connector_id, True)
        return ChargePointStatus.available if operative else ChargePointStatus.unavailable

    def change_availability(self, connector_id: int, operative: bool) -> AvailabilityStatus:
        assert self._db is not None and self.session is not None
        before = {cid: self._status(cid) for cid in [0, *self.connector_ids]}
        # Persisted before it is acknowledged: a power cut must not forget "Inoperative".
        self._db.set_availability(connector_id, operative, None)
        self._operative[connector_id] = operative
        for status in self.statuses():
            if before[status.connector_id] != status.status:
                self.session.report_status(status)
        log.info(
            "connector %d set %s by the central system",
            connector_id,
            "operative" if operative else "inoperative",
        )
        return AvailabilityStatus.accepted

    def reset_allowed(self, kind: ResetType) -> ResetStatus:
        return ResetStatus.accepted

    def perform_reset(self, kind: ResetType) -> None:
        log.warning("%s reset requested by the central system", kind.value.lower())
        self._reset = kind
        if self._scope is not None:
            self._scope.cancel()
