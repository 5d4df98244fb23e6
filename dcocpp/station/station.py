"""The station: the nursery tree that is the life of the process (README, Architecture).

    Station.run()
    ├── hardware backend            started first, runs for the life of the process
    ├── local HTTP API              when asked for (--api), from the first boot's connectors
    │                               on; also outlives soft resets
    ├── clock watcher               notices a step of the system clock (clock/stationclock.py)
    └── one boot (rebuilt by a soft reset)
        ├── OCPP session, transaction outbox
        └── connector task x N      one per gun, each with its machine

The hardware outlives a soft reset (a plugged EV stays plugged); everything the controller
decides is built again from the configuration files and the database, and each connector picks
up the physical truth from its gun. A hard reset ends `run()` with `HardReset` so that the
process exits and its supervisor restarts it.

The station is the only place that knows both the OCPP layer and the hardware: it implements
`ChargePointControl` for the former and `StationView` for the local API. Its database is
reached off the event loop (`dcocpp.storage.asyncdb`): nothing here waits for the disk on the loop.
"""

from __future__ import annotations

import logging
import ssl
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio
from ocpp.v16.enums import (
    AvailabilityStatus,
    CancelReservationStatus,
    ChargePointStatus,
    ReadingContext,
    Reason,
    RemoteStartStopStatus,
    ReservationStatus,
    ResetStatus,
    ResetType,
    UnlockStatus,
)

from dcocpp.api import server as api_server
from dcocpp.api.feed import Feed
from dcocpp.clock import WallClock, ocpp_time, parse_ocpp_time
from dcocpp.clock.stationclock import SYNC_THRESHOLD_S, ClockStep, StationClock
from dcocpp.config import ChargerConfig
from dcocpp.connector import events
from dcocpp.connector.metering import MEASURANDS
from dcocpp.connector.relay import RELAY_ACK_DEADLINE
from dcocpp.connector.sampling import METER_PERSIST_INTERVAL
from dcocpp.connector.task import INBOX_SIZE, ConnectorServices, ConnectorTask
from dcocpp.hardware.events import CoalescingChannel
from dcocpp.hardware.factory import build_hardware
from dcocpp.hardware.interface import FaultKind, HardwareBackend, HardwareError, SimulationControl
from dcocpp.hardware.registercheck import JITTER_S, RESOLUTION_WH
from dcocpp.ocpp import transport
from dcocpp.ocpp.authcache import AuthorizationCache
from dcocpp.ocpp.authorization import Authorizer
from dcocpp.ocpp.certificates.chargepoint import ChargePointCertificates
from dcocpp.ocpp.certificates.store import CertificateStore, RootKind
from dcocpp.ocpp.certificates.tls import CentralSystemTrust, client_context
from dcocpp.ocpp.configuration import ConfigurationStore
from dcocpp.ocpp.control import ConnectorStatus
from dcocpp.ocpp.diagnostics import (
    DIAGNOSTICS_UPLOADS,
    LOG_UPLOADS,
    DiagnosticsService,
    LogService,
    Upload,
    UploadState,
    log_status,
)
from dcocpp.ocpp.firmware import FirmwarePlan, FirmwareService, FirmwareState, InstallHook
from dcocpp.ocpp.locallist import LocalAuthorizationList
from dcocpp.ocpp.securitylog import (
    SECURITY_LOG,
    SecurityLog,
    SecurityLogError,
    sent_to_central_system,
)
from dcocpp.ocpp.securityprofile import STATE_FILE as SECURITY_PROFILE_FILE
from dcocpp.ocpp.securityprofile import SecurityProfiles
from dcocpp.ocpp.services import Identity
from dcocpp.ocpp.session import ChargePointSession
from dcocpp.ocpp.smartcharging.service import ChargingContext, ChargingProfiles
from dcocpp.ocpp.traffic import LinkTraffic
from dcocpp.ocpp.transactions import TransactionOutbox
from dcocpp.ocpp.transfer import SUPPORTED_PROTOCOLS
from dcocpp.station import history
from dcocpp.station.limits import LimitEnforcer
from dcocpp.station.reservations import ReservationBook
from dcocpp.storage.asyncdb import AsyncDatabase, Runner
from dcocpp.storage.database import SCHEMA_VERSION, StorageError, UploadRow

log = logging.getLogger(__name__)

USER_CONFIG_NAME = "ocpp16-user-config.json"
# Where UpdateFirmware's downloads go, in the data directory.
FIRMWARE_DIR = "firmware"
# The certificate store, in the data directory (`certificates.store`).
CERTIFICATES = "certificates"
# The charge point's TLS client certificate (PEM, intermediates after it) and its private key
# (PEM, unencrypted), presented on wss:// (security profile 3).
CLIENT_CERTIFICATE = "charge-point.pem"
CLIENT_KEY = "charge-point.key"
# A reset or a power failure waits this long (in all) for the StopTransactions it caused to be
# delivered.
RESET_FLUSH_TIMEOUT = 10.0
# A planned stop (SIGTERM, Ctrl-C) delivers the StopTransactions it stored for at most this
# long, then the process exits; what is left goes out after the next start. Short next to
# systemd's TimeoutStopSec (90 s by default): a restart does not wait long for a central
# system that is away.
SHUTDOWN_GRACE = 5.0
# Stopping every transaction takes this long at most: each waits up to RELAY_ACK_DEADLINE for
# its relay to open before the reading it is billed at.
STOP_TIMEOUT = RELAY_ACK_DEADLINE + 1.0
# A simulation action (plug, fault, ...) returns once the connector has seen its effect, or
# after this long: on the PLC backend the effect travels over CAN (and through the PLC's own
# debounce and timeouts) before the charger knows.
SIMULATION_SETTLE_TIMEOUT = 3.0
# An EV asked to resume may have nothing left to ask for: then there is no effect to wait for.
EV_SETTLE_TIMEOUT = 0.5
# A tag at the reader (local API) is answered with the charger's decision once it is known, or
# after this long (an Authorize.req may wait for the central system's answer much longer).
AUTHORIZATION_WAIT = 5.0
# After a controller crash, how long a PLC's relay may stay closed: its RelayControl watchdog
# (about 300 ms), with room. Bounds what a register kept through a crash may bill.
POWER_CUT_SLACK_S = 1.0
_RESET_REASONS = {ResetType.soft: Reason.soft_reset, ResetType.hard: Reason.hard_reset}
_FAULT_KINDS = {
    "estop": FaultKind.EMERGENCY_STOP,
    "earth": FaultKind.EARTH_FAULT,
    "comm": FaultKind.COMMUNICATION,
    "meter": FaultKind.METER,
    "lock": FaultKind.LOCK,
}


class HardReset(Exception):
    """The central system asked for a hard reset: the process must exit and be restarted."""


def client_ssl_context(
    config: ChargerConfig,
    trusted_pem: str = "",
    present: bool = True,
    charge_point: ChargePointCertificates | None = None,
) -> tuple[ssl.SSLContext, bool]:
    """TLS for wss:// trusting the installed CSMS roots `trusted_pem` and security.csmsCaBundle
    (`certificates.tls.client_context`: TLS 1.2 or newer), and whether it presents a client
    certificate. With `present`, it does: the charge point certificate of the store
    (`charge_point`) while it is valid, else `CLIENT_CERTIFICATE` in security.clientCertDir
    with `CLIENT_KEY` in security.keyDir, when both are there (the initial certificate, and
    the fallback). A pair that cannot be used is logged and not presented: the charger runs
    on, and a central system that wants one says so when it refuses the connection."""
    security = config.security
    context = client_context(trusted_pem=trusted_pem, ca_bundle=security.csms_ca_bundle)
    if not present:
        return context, False
    if charge_point is not None and charge_point.valid_now():
        current = charge_point.current
        assert current is not None
        if _load_pair(context, current.path, current.key_path):
            return context, True
    cert = security.client_cert_dir / CLIENT_CERTIFICATE
    key = security.key_dir / CLIENT_KEY
    found = [path for path in (cert, key) if path.is_file()]
    if not found:
        return context, False
    if len(found) == 1:
        missing = key if found[0] == cert else cert
        log.warning("no TLS client certificate presented: %s is missing", missing)
        return context, False
    return context, _load_pair(context, cert, key)


def _load_pair(context: ssl.SSLContext, cert: Path, key: Path) -> bool:
    try:
        # Never OpenSSL's own prompt on the terminal for an encrypted key.
        context.load_cert_chain(cert, key, password=_no_key_password)
    except (OSError, ssl.SSLError) as exc:
        log.error("no TLS client certificate presented: %s with %s: %s", cert, key, exc)
        return False
    log.info("TLS client certificate: %s", cert)
    return True


def _no_key_password() -> bytes:
    raise ssl.SSLError("the key is encrypted; it must not be (protect it by its directory)")


def _int_or_none(text: str | None) -> int | None:
    return None if text is None else int(text)


def load_configuration_store(config: ChargerConfig) -> ConfigurationStore:
    return ConfigurationStore.load(
        config.ocpp_config_path,
        config.data_dir / USER_CONFIG_NAME,
        patches={
            "ChargePointId": config.charge_point.id,
            "CentralSystemURI": config.charge_point.central_system_uri,
            "NumberOfConnectors": len(config.connectors),
            # What the file transfer service really speaks.
            "SupportedFileTransferProtocols": ",".join(SUPPORTED_PROTOCOLS),
        },
        measurable=MEASURANDS,
    )


class Station:
    """Implements `ChargePointControl` (for the OCPP session) and `StationView` (for the API)."""

    def __init__(
        self,
        config: ChargerConfig,
        *,
        hardware: HardwareBackend | None = None,
        simulation: SimulationControl | None = None,
        open_stream: transport.OpenStream | None = None,
        clock: WallClock | None = None,
        api_address: tuple[str, int] | None = None,
        api_token: str | None = None,
        store: ConfigurationStore | None = None,
        database_runner: Runner | None = None,
    ):
        self.config = config
        # Where the database's statements (and the security log's writes) run: a worker
        # thread unless told otherwise (see dcocpp.storage.asyncdb; a test on trio's virtual
        # clock runs them on the loop).
        self._database_runner = database_runner
        # The OCPP keys as the command line already loaded them, for the first boot (a soft
        # reset loads them again from the files).
        self._loaded_store = store
        if hardware is None:
            built = build_hardware(config)
            hardware, simulation = built.backend, built.simulation
        self.hardware = hardware
        # What the local API's simulation endpoints drive; None on real hardware.
        self.simulation = simulation
        # The system's clock (or `clock`), following the central system's (see
        # dcocpp.clock.stationclock).
        self.clock = StationClock(clock)
        self.clock.subscribe(self._clock_stepped)
        self._open_stream = open_stream
        self._api_address = api_address
        self._api_token = api_token  # required by the API when given (see dcocpp.api.server)
        self.api_port: int | None = None
        self._scope: trio.CancelScope | None = None
        self._lifetime: trio.Nursery | None = None  # `run`'s: what outlives soft resets
        self._boot_nursery: trio.Nursery | None = None
        self._reset: ResetType | None = None
        self.session: ChargePointSession | None = None
        self.store: ConfigurationStore | None = None
        self.outbox: TransactionOutbox | None = None
        self.diagnostics: DiagnosticsService | None = None  # GetDiagnostics', per boot
        self.logs: LogService | None = None  # GetLog's, per boot
        # Every security event, of every boot (see dcocpp.ocpp.securitylog).
        self.security_log = SecurityLog(
            config.log_dir / SECURITY_LOG, clock=self.clock.now, run=database_runner
        )
        self.firmware: FirmwareService | None = None  # UpdateFirmware's, per boot
        self._db: AsyncDatabase | None = None
        self.connectors: dict[int, ConnectorTask] = {}
        self.limits: LimitEnforcer | None = None  # smart charging's enforcement, per boot
        self.reservations: ReservationBook | None = None  # ReserveNow's, per boot
        self._operative0 = True
        self._first_boot = True  # of this process: the StartupOfTheDevice security event
        self._inboxes = {c.id: trio.open_memory_channel[Any](INBOX_SIZE) for c in config.connectors}
        # Each gun's events from the hardware on their way to its inbox (see `run`).
        self.hardware_events: dict[int, CoalescingChannel] = {}
        self.started = trio.Event()
        # The delivery that follows stopping every transaction (see `_deliver`).
        self._delivery: trio.CancelScope | None = None
        self._delivery_cut = False  # `end_delivery` was called: no delivery waits any more
        self._closing = False  # shut_down / power_failure began: no new transaction
        # The operator's console (the local API): the link's counters, kept across soft
        # resets, and the news its event streams follow (status changes, message-log lines).
        self.traffic = LinkTraffic()
        self.feed = Feed()
        self.traffic.tap = self.feed.frame

    @property
    def connector_ids(self) -> Sequence[int]:
        return [c.id for c in self.config.connectors]

    # --- lifetime --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; raises `HardReset` when a hard reset was accepted."""
        try:
            self.security_log.open()
        except SecurityLogError as exc:  # the charger works on; the console has the events
            log.error("%s: security events go to this log only", exc)
        try:
            await self._run(task_status)
        finally:
            self.security_log.close()

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            # The backend never waits for a connector (its reader serves every gun, safety
            # inputs included): what a busy connector cannot take yet is held and coalesced.
            self.hardware_events = channels = {
                cid: CoalescingChannel(send.clone()) for cid, (send, _) in self._inboxes.items()
            }
            for channel in channels.values():
                nursery.start_soon(channel.run)
            nursery.start_soon(self.clock.watch)
            await nursery.start(self.hardware.run, channels)
            self._lifetime = nursery  # the API's, once the first boot has its connectors
            while True:
                try:
                    kind = await self._boot(task_status)
                except BaseExceptionGroup as group:
                    if self.started.is_set() and group.subgroup(StorageError) is not None:
                        await self._database_failed()
                    raise
                task_status = trio.TASK_STATUS_IGNORED
                if kind == ResetType.hard:
                    raise HardReset()
                log.info("soft reset: restarting the station")

    async def _boot(self, task_status: trio.TaskStatus[None]) -> ResetType | None:
        config = self.config
        self._reset = None
        self.started = trio.Event()
        self.store = store = self._loaded_store or load_configuration_store(config)
        self._loaded_store = None
        self._db = db = await AsyncDatabase.open(config.data_dir, run=self._database_runner)
        try:
            saved = await db.availability()
            self._operative0 = saved.get(0, True)
            cp = config.charge_point
            certificates = CertificateStore(config.data_dir / CERTIFICATES, clock=self.clock.now)
            certificates.load()
            charge_point_certificates = ChargePointCertificates(
                certificates,
                charge_point_id=cp.id,
                clock=self.clock.now,
                organization=lambda: store.get("CpoName"),
                max_chain_size=lambda: _int_or_none(store.get("CertificateSignedMaxChainSize")),
            )
            charge_point_certificates.load()
            # Built for ws:// too: a higher SecurityProfile may turn the connection into wss://.
            tls = CentralSystemTrust(
                certificates,
                partial(client_ssl_context, config, charge_point=charge_point_certificates),
                ca_bundle=config.security.csms_ca_bundle,
                charge_point=charge_point_certificates,
            )
            charging_profiles = ChargingProfiles(
                store,
                db,
                clock=self.clock.now,
                monotonic=trio.current_time,
                store_errors=(StorageError,),
            )
            await charging_profiles.load()
            # Both persisted in the boot's database; its errors are theirs to translate.
            auth_cache = AuthorizationCache(db, clock=self.clock.now, store_errors=(StorageError,))
            await auth_cache.load()
            local_list = LocalAuthorizationList(
                db, clock=self.clock.now, store_errors=(StorageError,)
            )
            await local_list.load()
            self.diagnostics = diagnostics = DiagnosticsService(
                self,
                store,
                config.data_dir,
                self._report_diagnostics,
                ca_bundle=config.security.csms_ca_bundle,
                clock=self.clock.now,
            )
            self.logs = logs = LogService(
                self.security_log,
                diagnostics,
                self._report_log,
                charge_point_id=cp.id,
                ca_bundle=config.security.csms_ca_bundle,
                clock=self.clock.now,
            )
            # The version an install recorded replaces charger.json's.
            running = await db.firmware_version() or cp.firmware_version
            install = config.firmware
            self.firmware = firmware = FirmwareService(
                self,
                config.data_dir / FIRMWARE_DIR,
                version=running,
                hook=(
                    None
                    if install.install_command is None
                    else InstallHook(install.install_command, install.install_timeout)
                ),
                ca_bundle=config.security.csms_ca_bundle,
                clock=self.clock.now,
            )
            security_profiles = SecurityProfiles(config.data_dir / SECURITY_PROFILE_FILE)
            security_profiles.load()
            self.session = session = ChargePointSession(
                Identity(cp.id, cp.vendor, cp.model, running, cp.serial_number),
                cp.central_system_uri,
                store,
                self,
                auth_cache=auth_cache,
                local_list=local_list,
                charging_profiles=charging_profiles,
                diagnostics=diagnostics,
                logs=logs,
                firmware=firmware,
                tls=tls,
                certificates=certificates,
                charge_point_certificates=charge_point_certificates,
                security_profiles=security_profiles,
                security_events=self.security_event,
                security_notes=self.security_log.note,
                open_stream=self._open_stream,
                clock=self.clock.now,
                central_time=self.clock.follow,
                traffic=self.traffic,
            )
            self.outbox = outbox = TransactionOutbox(session, db)
            now = ocpp_time(self.clock.now())
            # Transactions a power cut or crash left running are stopped (PowerLoss) first, at
            # the register of a meter that kept counting through it (a PLC's) where there is one.
            recovered = await outbox.recover(now, self._surviving_registers(), self._max_rise())
            cut_off = {tx.connector_id for tx in recovered}
            # Installed / InstallationFailed of an update the last run ended, before the session.
            plan = await db.firmware_plan()
            after_update = await firmware.recover(
                None if plan is None else FirmwarePlan.from_row(plan)
            )
            await self._recover_uploads(db)
            if self._first_boot:
                self._first_boot = False
                await self.security_event("StartupOfTheDevice", after_update)
            self.reservations = reservations = ReservationBook(
                db, store, self.clock, lambda: self.connectors, lambda: self._operative0
            )
            services = ConnectorServices(
                reservations=reservations,
                store=store,
                outbox=outbox,
                authorizer=Authorizer(session),
                clock=self.clock,
                report_status=partial(self._report_status, session),
                availability_applied=self._availability_applied,
            )
            before = {cid: task.machine.truth for cid, task in self.connectors.items()}
            self.connectors = {}
            for connector in config.connectors:
                previous = before.get(connector.id)
                send, receive = self._inboxes[connector.id]
                self.connectors[connector.id] = ConnectorTask(
                    connector,
                    self.hardware.gun(connector.id),
                    services,
                    receive,
                    send,
                    operative=self._operative0 and saved.get(connector.id, True),
                    finishing=connector.id in cut_off
                    or (
                        previous is not None
                        and (previous.finishing or previous.transaction is not None)
                    ),
                )
                # A stop signalled during a soft reset holds for the guns of the new boot too.
                self.connectors[connector.id].closing = self._closing
            await reservations.load()  # each connector takes its reservations as it starts
            self.limits = limits = LimitEnforcer(self.connectors, charging_profiles, self.clock)
            await self._serve_api()
            with trio.CancelScope() as self._scope:
                async with trio.open_nursery() as nursery:
                    self._boot_nursery = nursery
                    await nursery.start(reservations.run)
                    for task in self.connectors.values():
                        await nursery.start(task.run)
                    # The guns' current limits are in place before the central system is.
                    await nursery.start(limits.run)
                    await nursery.start(outbox.run)
                    await nursery.start(diagnostics.run)
                    await nursery.start(logs.run)
                    await nursery.start(firmware.run)
                    await nursery.start(session.run)
                    log.info(
                        "station %s up: %d connectors, central system %s",
                        cp.id,
                        len(config.connectors),
                        session.endpoint,
                    )
                    self.started.set()
                    task_status.started()
        finally:
            self._boot_nursery = None
            with trio.CancelScope(shield=True):  # a clean close, whatever ends the boot
                await db.close()
        return self._reset

    def _clock_stepped(self, step: ClockStep) -> None:
        """The station's clock stepped (see `dcocpp.clock`): the limits look at their
        schedules again; a step beyond the threshold is a SettingSystemTime security event
        (queued from the boot's nursery: a database failure there ends the boot as any
        other); a step of the system clock asks the central system's time at once."""
        if self._boot_nursery is None:
            return  # between boots: the next one reads the clock afresh
        if self.limits is not None:
            self.limits.wake()
        if abs(step.seconds) > SYNC_THRESHOLD_S:
            self._boot_nursery.start_soon(self._report_clock_step, step)
        if step.system and self.session is not None:
            self.session.heartbeat_now()

    async def _report_clock_step(self, step: ClockStep) -> None:
        await self.security_event("SettingSystemTime", step.describe(), at=step.after)

    async def _serve_api(self) -> None:
        """Start the local API, if asked for, the first time a boot has its connectors (not
        before: the database is read off the event loop, and the API would show a charger
        without them meanwhile) and before anything talks to the central system (an address
        the API cannot have stops the start there). It outlives soft resets, in the station's
        own nursery: its port stays where the operator put it."""
        if self._api_address is None or self.api_port is not None:
            return
        assert self._lifetime is not None
        _, self.api_port = await self._lifetime.start(
            partial(api_server.serve_api, token=self._api_token), self, *self._api_address
        )

    async def _database_failed(self) -> None:
        """A write (or read) of the database failed while the station ran: a transaction
        record or a queued message cannot be kept, so the process ends (status 1; a
        supervisor restarts it). No energy flows unrecorded meanwhile: every relay is
        commanded open first. The database still holds the transactions as running: the next
        start that can write to it stops them as after a power cut (PowerLoss)."""
        log.warning("the database failed: commanding every relay open, then stopping")
        # Shielded: a safety action, whatever else is ending; bounded like any relay command.
        with trio.CancelScope(shield=True), trio.move_on_after(RELAY_ACK_DEADLINE):
            async with trio.open_nursery() as nursery:
                for cid in self.connector_ids:
                    nursery.start_soon(self._open_relay, cid)

    async def _open_relay(self, connector_id: int) -> None:
        try:
            await self.hardware.gun(connector_id).set_relay(False)
        except HardwareError as exc:
            log.error("connector %d: relay not opened: %s", connector_id, exc)

    def _max_rise(self) -> dict[int, float]:
        """Per gun, the most energy (Wh) it can have delivered after a transaction's last
        persisted reading until a crash cut it off: METER_PERSIST_INTERVAL, then the PLC's
        watchdog (about 0.3 s), at the gun's rating, plus the register's step and jitter."""
        cut = METER_PERSIST_INTERVAL + POWER_CUT_SLACK_S + JITTER_S
        return {c.id: c.max_power_w * cut / 3600 + RESOLUTION_WH for c in self.config.connectors}

    def _surviving_registers(self) -> dict[int, int | None]:
        """Each gun's meter register as kept through a crash (None: its hardware keeps none),
        in Wh, as the OCPP layer bills."""
        registers: dict[int, int | None] = {}
        for cid in self.connector_ids:
            wh = self.hardware.gun(cid).surviving_register_wh()
            registers[cid] = None if wh is None else round(wh)
        return registers

    # --- ChargePointControl (for the OCPP layer) ---------------------------------------------

    def statuses(self) -> list[ConnectorStatus]:
        now = ocpp_time(self.clock.now())
        zero = ChargePointStatus.available if self._operative0 else ChargePointStatus.unavailable
        return [ConnectorStatus(0, zero, timestamp=now)] + [
            task.status() for task in self.connectors.values()
        ]

    async def change_availability(self, connector_id: int, operative: bool) -> AvailabilityStatus:
        assert self._db is not None and self.session is not None
        # Persisted before it is acknowledged: a power cut must not forget "Inoperative".
        try:
            await self._db.set_availability(connector_id, operative)
        except StorageError as exc:
            log.error("ChangeAvailability of connector %d rejected: %s", connector_id, exc)
            return AvailabilityStatus.rejected
        if connector_id == 0:
            was = self._operative0
            self._operative0 = operative
            if was != operative:
                self.session.report_status(self.statuses()[0])
            if not operative and self.reservations is not None:
                await self.reservations.charge_point_unavailable()  # 5.13
            saved = await self._db.availability()
            targets = {cid: operative and saved.get(cid, True) for cid in self.connectors}
        else:
            targets = {connector_id: operative and self._operative0}
        replies = [
            await self.connectors[cid].ask(events.AvailabilityChanged(target))
            for cid, target in targets.items()
        ]
        log.info(
            "connector %d set %s by the central system%s",
            connector_id,
            "operative" if operative else "inoperative",
            " (scheduled)" if "Scheduled" in replies else "",
        )
        return (
            AvailabilityStatus.scheduled if "Scheduled" in replies else AvailabilityStatus.accepted
        )

    def _availability_applied(self, connector_id: int, operative: bool) -> None:
        """A scheduled change took effect; the database has held it since it was asked for."""
        log.info(
            "connector %d is now %s", connector_id, "operative" if operative else "inoperative"
        )

    def reset_allowed(self, kind: ResetType) -> ResetStatus:
        return ResetStatus.accepted

    async def perform_reset(self, kind: ResetType) -> None:
        """Carry out the reset in the boot's own nursery and wait until it is under way: it
        must not depend on the connection that asked for it (a link that dies right after
        Reset.conf cancels its handler task, not the reset)."""
        if self._boot_nursery is None:
            return
        stopped = trio.Event()
        self._boot_nursery.start_soon(self._reset_now, kind, stopped)
        await stopped.wait()

    async def _reset_now(
        self, kind: ResetType, stopped: trio.Event, cause: str | None = None
    ) -> None:
        if cause is None:
            log.warning("%s reset requested by the central system", kind.value.lower())
        await self.security_event("ResetOrReboot", cause or f"{kind.value} reset by the CSMS")
        window = self._flush_window()
        await self._stop_transactions(_RESET_REASONS[kind])
        await self._deliver(window)
        self._reset = kind
        stopped.set()
        if self._scope is not None:
            self._scope.cancel()

    async def shut_down(self) -> None:
        """A planned stop (SIGTERM, Ctrl-C; then the process exits): every transaction is
        stopped with reason Reboot, at the meter reading taken after its relay opened, its
        StopTransaction stored; then, if there was one, what the outbox holds is delivered
        for SHUTDOWN_GRACE at most (`end_delivery` ends that at once). What is not
        delivered goes out after the next start."""
        self._close_connectors()
        if await self._stop_transactions(Reason.reboot):
            await self._deliver(trio.CancelScope(relative_deadline=SHUTDOWN_GRACE))

    async def power_failure(self) -> None:
        """Mains lost, running on backup power (SIGPWR): stop every transaction with reason
        PowerLoss and deliver what the outbox holds while the backup lasts (bounded by
        RESET_FLUSH_TIMEOUT). What is not delivered stays queued for after the restart."""
        log.warning("power failure: stopping every transaction before the backup runs out")
        window = self._flush_window()
        self._close_connectors()
        await self._stop_transactions(Reason.power_loss)
        await self._deliver(window)

    def _close_connectors(self) -> None:
        """No new transaction from now on (the process is about to exit): a tag whose
        authorization arrives during the grace, a remote start or an EV plugged in now would
        start one that is cut off at exit."""
        self._closing = True
        for task in self.connectors.values():
            task.closing = True

    def end_delivery(self) -> None:
        """Deliver nothing more (a second SIGTERM or Ctrl-C while stopping): the stop under
        way ends once every StopTransaction is stored, without waiting for the central
        system; the next start delivers them."""
        self._delivery_cut = True
        if self._delivery is not None:
            self._delivery.cancel()

    @staticmethod
    def _flush_window() -> trio.CancelScope:
        """RESET_FLUSH_TIMEOUT from now, for the stops and their delivery together."""
        return trio.CancelScope(deadline=trio.current_time() + RESET_FLUSH_TIMEOUT)

    async def _stop_transactions(self, reason: Reason) -> list[int]:
        """Stop every running transaction with `reason`: every relay is commanded open at
        once, and each StopTransaction is billed at the reading taken after its relay opened
        and stored in the outbox (within STOP_TIMEOUT). Returns the connectors stopped."""
        tasks = list(self.connectors.values())
        stopped: list[int] = []
        with trio.move_on_after(STOP_TIMEOUT) as stopping:
            for task in tasks:
                if await task.ask(events.StopRequested(reason)):
                    stopped.append(task.id)
            if stopped:
                log.info(
                    "stopping %d transaction(s) with reason %s: connector %s",
                    len(stopped),
                    reason.value,
                    ", ".join(map(str, stopped)),
                )
            for task in tasks:
                await task.wait_settled()  # its StopTransaction is in the outbox
        if stopping.cancelled_caught:
            log.error(
                "not every transaction stopped within %g s: the next start stops what is left"
                " (PowerLoss)",
                STOP_TIMEOUT,
            )
        return stopped

    async def _deliver(self, window: trio.CancelScope) -> None:
        """Deliver what the outbox holds until `window` ends (its deadline, or
        `end_delivery`); what is left stays queued for the next start."""
        outbox = self.outbox
        if outbox is None:
            return
        self._delivery = window
        if self._delivery_cut:
            window.cancel()
        with window:
            await outbox.wait_empty()  # out, if the central system is there
        if outbox.empty:
            log.info("transaction messages delivered")
        else:
            parked = f", {outbox.parked} of them parked" if outbox.parked else ""
            log.warning(
                "%d transaction message(s) not delivered%s: queued for the next start",
                len(outbox),
                parked,
            )

    async def remote_start(self, connector_id: int | None, id_tag: str) -> RemoteStartStopStatus:
        assert self.store is not None
        if self._closing:
            return RemoteStartStopStatus.rejected  # the charger is stopping
        authorize = self.store.get_bool("AuthorizeRemoteTxRequests")
        if connector_id is not None:
            candidates = [connector_id]
        elif self.reservations is not None:
            candidates = self.reservations.preferred_connectors(id_tag)  # its reservation first
        else:
            candidates = list(self.connectors)
        for cid in candidates:
            if await self.connectors[cid].ask(events.RemoteStartRequested(id_tag, authorize)):
                return RemoteStartStopStatus.accepted
        return RemoteStartStopStatus.rejected

    async def reserve_now(
        self,
        connector_id: int,
        expiry: datetime,
        id_tag: str,
        reservation_id: int,
        parent_id_tag: str | None = None,
    ) -> ReservationStatus:
        assert self.reservations is not None
        return await self.reservations.reserve(
            connector_id, expiry, id_tag, reservation_id, parent_id_tag
        )

    async def cancel_reservation(self, reservation_id: int) -> CancelReservationStatus:
        assert self.reservations is not None
        return await self.reservations.cancel(reservation_id)

    async def remote_stop(self, transaction_id: int) -> RemoteStartStopStatus:
        for task in self.connectors.values():
            tx = task.transaction
            if tx is not None and tx.transaction_id == transaction_id:
                await task.ask(events.StopRequested(Reason.remote))
                return RemoteStartStopStatus.accepted
        return RemoteStartStopStatus.rejected

    async def unlock(self, connector_id: int) -> UnlockStatus:
        return await self.connectors[connector_id].ask(events.UnlockRequested())

    async def trigger_meter_values(self, connector_id: int | None) -> None:
        for cid, task in self.connectors.items():
            if connector_id in (None, 0, cid):
                await task.send_meter_values(ReadingContext.trigger)

    def charging_context(self, connector_id: int) -> ChargingContext:
        assert self.limits is not None
        return self.limits.context(connector_id)

    # --- FirmwareHost (for UpdateFirmware) ---------------------------------------------------

    async def record_firmware(
        self,
        plan: FirmwarePlan | None,
        statuses: Sequence[FirmwareState] = (),
        *,
        request_id: int | None = None,
        version: str | None = None,
        security_event: tuple[str, str, str | None] | None = None,
    ) -> None:
        assert self.outbox is not None
        await self.outbox.firmware_step(
            None if plan is None else plan.row(),
            [status.value for status in statuses],
            request_id=request_id,
            version=version,
            security_event=security_event,
        )
        if security_event is not None:
            # Queued with the step that caused it (one write); the security log hears of it too.
            kind, at, tech_info = security_event
            await self.security_log.event(kind, tech_info, sent=True, at=parse_ocpp_time(at))

    async def hold_for_firmware(self, held: bool) -> None:
        log.info(
            "guns %s for the firmware install",
            "held (Unavailable once free, no new transaction)" if held else "released",
        )
        for task in self.connectors.values():
            await task.ask(events.MaintenanceHold(held))

    async def wait_no_transaction(self) -> None:
        for task in self.connectors.values():
            await task.wait_truth(lambda truth: truth.transaction is None)
            await task.wait_settled()  # its StopTransaction is in the outbox

    async def reboot_for_firmware(self) -> None:
        """The hard-reset path, in the boot's nursery (it cancels the boot, the caller too)."""
        if self._boot_nursery is None:
            return
        stopped = trio.Event()
        self._boot_nursery.start_soon(
            self._reset_now, ResetType.hard, stopped, "reboot into the installed firmware"
        )
        await stopped.wait()

    # --- DiagnosticsSource (for GetDiagnostics) ----------------------------------------------

    async def security_event(
        self, kind: str, tech_info: str | None = None, *, at: datetime | None = None
    ) -> None:
        """To the security log; to the central system too where the whitepaper says so."""
        at = at or self.clock.now()
        sent = sent_to_central_system(kind)
        await self.security_log.event(kind, tech_info, sent=sent, at=at)
        if sent and self.outbox is not None:
            await self.outbox.security_event(kind, ocpp_time(at), tech_info)

    async def _report_diagnostics(self, state: UploadState, job: Upload) -> None:
        """Each step of an upload goes through the outbox: persisted, delivered in order once
        connected, so that a connection lost meanwhile does not lose the final status; the
        upload is recorded running with its Uploading, ended with its final status (one left
        at the next boot was cut off: `_recover_uploads`)."""
        payload = {"status": state.value}
        action = "DiagnosticsStatusNotification"
        await self._report_upload(DIAGNOSTICS_UPLOADS, state, job, action, payload)

    async def _report_log(self, state: UploadState, job: Upload) -> None:
        """GetLog's steps, as `_report_diagnostics`, with the request's id."""
        payload = {"status": log_status(state, job), "request_id": job.request_id}
        await self._report_upload(LOG_UPLOADS, state, job, "LogStatusNotification", payload)

    async def _report_upload(
        self, kind: str, state: UploadState, job: Upload, action: str, payload: dict[str, Any]
    ) -> None:
        if self.outbox is None:
            return
        running = None
        if state is UploadState.UPLOADING:
            running = UploadRow(kind, job.request_id, job.file_name, job.location)
        await self.outbox.upload_status(kind, running, action, payload)

    async def _recover_uploads(self, db: AsyncDatabase) -> None:
        """An upload the last run left running was cut off (its file was temporary): told
        failed once, in the write that forgets it."""
        uploads = [service.uploads for service in (self.diagnostics, self.logs) if service]
        for row in await db.running_uploads():
            for service in uploads:
                if service.kind == row.kind:
                    await service.recover(row.file_name, row.location, row.request_id)

    def log_files(self) -> list[Path]:
        """Every file of the log directory (the OCPP message log and its rotations, and
        whatever console log the integrator writes there)."""
        folder = self.config.log_dir
        try:
            return sorted(path for path in folder.iterdir() if path.is_file())
        except OSError as exc:
            log.warning("diagnostics: log directory %s not read: %s", folder, exc)
            return []

    async def diagnostics_documents(self) -> dict[str, Any]:
        assert self._db is not None
        queued = Counter(message.action for message in await self._db.queued_messages())
        return {
            "status": self.snapshot(),
            "database": {
                "schemaVersion": SCHEMA_VERSION,
                "outboxByAction": dict(queued),
                "outboxParked": self.outbox.parked if self.outbox else 0,
                "transactions": len(await self._db.transactions()),
            },
        }

    # --- StationView (for the local API) -----------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        session = self.session
        outbox = self.outbox
        snapshot = {
            "chargePoint": {
                "id": self.config.charge_point.id,
                "connected": bool(session and session.connected),
                "registration": session.state.value if session else "Disconnected",
                # Where it connects (with the charge point id), and why it last could not.
                "url": session.endpoint if session else None,
                "lastConnectionFailure": (
                    attrs.asdict(session.last_failure) if session and session.last_failure else None
                ),
                # Transaction messages not yet answered; parked ones need the operator's eye.
                "outbox": {
                    "queued": len(outbox) if outbox else 0,
                    "parked": outbox.parked if outbox else 0,
                },
                # The hardware's own counters (the PLC backend's CAN frames and errors).
                "hardware": dict(self.hardware.counters()),
                # The security profile in use, the one the central system set (on trial
                # until a connection opens with it) and the latest fallback from one that
                # could not connect.
                "security": self._security_snapshot(),
                # GetDiagnostics: the status and the upload in progress (or the last one).
                "diagnostics": (
                    self.diagnostics.snapshot()
                    if self.diagnostics
                    else {"status": "Idle", "upload": None}
                ),
                # GetLog: the same.
                "logs": self.logs.snapshot() if self.logs else {"status": "Idle", "upload": None},
                # UpdateFirmware: the last status told, the running version, the update under
                # way (or the last one).
                "firmware": (
                    self.firmware.snapshot()
                    if self.firmware
                    else {
                        "status": "Idle",
                        "version": self.config.charge_point.firmware_version,
                        "update": None,
                    }
                ),
            },
            "connectors": [
                {**task.snapshot(), "currentLimitA": self._current_limit(cid), **self._gun(cid)}
                for cid, task in self.connectors.items()
            ],
        }
        return self._console_details(snapshot)

    def _security_snapshot(self) -> dict[str, Any] | None:
        session = self.session
        if session is None:
            return None
        profiles = session.security_profiles
        fallback = profiles.last_fallback
        certificates = session.charge_point_certificates
        current = certificates.current if certificates is not None else None
        # Only the dates: what the console warns of before TLS stops working.
        roots = (
            []
            if session.certificates is None
            else session.certificates.installed(RootKind.CENTRAL_SYSTEM)
        )
        earliest = min((root.certificate.not_valid_after_utc for root in roots), default=None)
        return {
            "securityProfile": session.security_profile_in_use(),
            "configuredProfile": profiles.profile,
            "onTrial": profiles.on_trial,
            "lastFallback": None if fallback is None else attrs.asdict(fallback),
            "chargePointCertificateValidTo": (
                None if current is None else ocpp_time(current.certificate.not_valid_after_utc)
            ),
            "centralSystemRoots": len(roots),
            "centralSystemRootsValidTo": None if earliest is None else ocpp_time(earliest),
        }

    def _current_limit(self, connector_id: int) -> float | None:
        """The current limit smart charging gave the gun's hardware (None: not yet)."""
        applied = None if self.limits is None else self.limits.applied.get(connector_id)
        return None if applied is None else float(applied)

    def _task(self, connector_id: int) -> ConnectorTask:
        return self.connectors[connector_id]  # KeyError -> 404

    def _simulator(self) -> SimulationControl:
        if self.simulation is None:
            raise ValueError("this charger runs on real hardware; there is nothing to simulate")
        return self.simulation

    async def plug(self, connector_id: int) -> None:
        self._task(connector_id)
        await self._simulator().plug(connector_id)
        with trio.move_on_after(SIMULATION_SETTLE_TIMEOUT):
            await self._task(connector_id).wait_truth(lambda t: t.plugged)

    async def unplug(self, connector_id: int) -> None:
        self._task(connector_id)
        await self._simulator().unplug(connector_id)
        with trio.move_on_after(SIMULATION_SETTLE_TIMEOUT):
            await self._task(connector_id).wait_truth(lambda t: not t.plugged)

    async def present_id(self, connector_id: int, id_tag: str) -> dict[str, Any]:
        outcome = await self._task(connector_id).present_id(id_tag, wait=AUTHORIZATION_WAIT)
        if outcome.refused is not None:
            raise ValueError(
                f"connector {connector_id} refused {id_tag} at the reader: {outcome.refused}"
            )
        decision = outcome.decision
        return {
            "idTag": id_tag,
            "status": None if decision is None else decision.status.value,
            "source": None if decision is None else decision.source,
            "taken": outcome.taken,
            "detail": outcome.detail,
        }

    async def set_ev_suspended(self, connector_id: int, suspended: bool) -> None:
        self._task(connector_id)
        await self._simulator().set_ev_suspended(connector_id, suspended)
        with trio.move_on_after(EV_SETTLE_TIMEOUT):
            await self._task(connector_id).wait_truth(lambda t: t.ev_requesting != suspended)

    async def set_fault(self, connector_id: int, kind: str, active: bool) -> None:
        self._task(connector_id)
        fault = _FAULT_KINDS[kind]
        try:
            await self._simulator().set_fault(connector_id, fault, active)
        except HardwareError as exc:
            raise ValueError(str(exc)) from exc
        with trio.move_on_after(SIMULATION_SETTLE_TIMEOUT):
            await self._task(connector_id).wait_truth(lambda t: (fault in t.fault_kinds) == active)

    # --- the operator's console (the local API) ----------------------------------------------

    def _report_status(self, session: ChargePointSession, status: ConnectorStatus) -> None:
        session.report_status(status)
        self.feed.changed()  # the console shows a status change at once

    def _console_details(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        """The snapshot with what it shows the operator's console besides (see
        `StationView.snapshot`)."""
        cp = snapshot["chargePoint"]
        oldest = self.outbox.oldest_age() if self.outbox is not None else None
        cp["outbox"]["oldestAgeS"] = None if oldest is None else round(oldest, 1)
        cp["simulation"] = None if self.simulation is None else self._simulation_kind()
        cp["link"] = self.traffic.snapshot()
        cp["reservations"] = self.reservations.listed() if self.reservations else []
        return snapshot

    def _simulation_kind(self) -> str:
        """ "simulated" (guns simulated in-process) or "emulated" (emulated PLCs on a virtual
        CAN bus, through the real driver)."""
        return "emulated" if self.config.charge_point.use_plc else "simulated"

    def _gun(self, connector_id: int) -> dict[str, Any]:
        """A gun's running transaction and where its current limit comes from."""
        task = self.connectors[connector_id]
        tx = task.transaction
        transaction = None
        if tx is not None:
            energy = task.gun.read_meter().energy_wh - tx.meter_start
            started = parse_ocpp_time(tx.started_at)
            transaction = {
                "transactionId": tx.transaction_id,
                "idTag": tx.id_tag,
                "startedAt": tx.started_at,
                "durationS": round((self.clock.now() - started).total_seconds(), 1),
                "energyWh": round(max(0.0, energy), 1),
            }
        limit = self.limits.explain(connector_id) if self.limits is not None else None
        return {"transaction": transaction, "currentLimit": limit}

    def link_counters(self) -> dict[str, Any]:
        return self.traffic.counters()

    def configuration(self) -> list[dict[str, Any]]:
        """Every configuration key with its value, write-only ones (AuthorizationKey) left
        out, as GetConfiguration reports them."""
        if self.store is None:
            return []
        return [dict(entry) for entry in self.store.get_configuration(None)[0]]

    async def transactions(self, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` sessions of the history (see `dcocpp.station.history`)."""
        db = self._database()
        sessions = await db.sessions(limit)
        samples = await db.session_samples(row.id for row in sessions)
        return [history.summary(row, history.points(row, samples[row.id])) for row in sessions]

    async def transaction_meter_values(self, session_id: int) -> dict[str, Any]:
        """A session of the history with its readings as points; KeyError: no such one."""
        db = self._database()
        row = await db.session(session_id)
        if row is None:
            raise KeyError(session_id)
        samples = await db.session_samples([row.id])
        points = history.points(row, samples[row.id])
        return {**history.summary(row, points), "points": points}

    def _database(self) -> AsyncDatabase:
        if self._db is None:
            raise ValueError("the station is restarting; try again in a moment")
        return self._db
