"""The charge point's OCPP session: connect, register, keep alive, reconnect forever.

`ChargePointSession.run()` owns one nursery per WebSocket connection. In it run the RPC reader,
the registration (BootNotification until Accepted), the heartbeat, the WebSocket ping and the
status sender. When the connection dies, for whatever reason, that nursery is cancelled, one line
is logged, and the session reconnects after an exponential backoff with jitter. Nothing but
cancellation ends `run()`; a central system that is down never crashes the charger.

A reconnect is not a reboot: BootNotification goes out on the first connection of a session
(a start, a soft reset) and on later ones only until a registration is Accepted (or when a
TriggerMessage asks). A connection after an Accepted one resumes it at once: a Heartbeat (the
central system's time, and a sign of life) and every connector's status, since the central
system may have missed changes or marked the charger's connectors unknown meanwhile.

Time. The currentTime of every BootNotification.conf (Accepted or Pending: a central system
that rejects the charger is not its clock) and Heartbeat.conf goes to `central_time` with the
round trip of its CALL; the station's clock decides whether to follow it. `heartbeat_now`
asks for the central system's time at once (the station's clock stepped).

Security profile (`securityprofile`). The URL connected to is the configured one with the
scheme the profile the central system set asks for (`wss://` for 2 and 3); a profile on trial
that fails FALLBACK_ATTEMPTS attempts gives way to the previous one, with a security event.
SecurityProfile reports what each connection really uses. At profile 3 the charge point
certificate is renewed (SignCertificate) when it is missing or expires within RENEWAL_MARGIN,
looked at once registered and every CERTIFICATE_CHECK_INTERVAL.

Failures are logged once per change, not once per retry: the first failed attempt of a series
(and a lost connection, with how its WebSocket closed: who closed it, the close code and
reason) at WARNING, with the URL and the reason; further attempts that fail
the same way at DEBUG; a new reason at WARNING again; the connection that finally opens at
INFO. `last_failure` keeps the latest failure for the operator's status.

StatusNotifications are coalesced per connector (`report_status`): whatever has not gone out
yet (queued, or behind one in flight) is cut down to the shortest path of statuses the OCPP 1.6
table allows from the last one sent to the latest; then at most STATUS_BURST go out at once and
one per STATUS_INTERVAL after that, so a flapping input costs a few messages a second, and the
last one sent is always the connector's true status.
"""

from __future__ import annotations

import logging
import math
import random
import ssl
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import attrs
import trio
from ocpp.v16 import call
from ocpp.v16.enums import (
    AuthorizationStatus,
    ChargePointErrorCode,
    ChargePointStatus,
    ConfigurationStatus,
    GenericStatus,
    RegistrationStatus,
)
from trio_websocket import CloseReason

from dcocpp.clock import ocpp_time, parse_ocpp_time
from dcocpp.concurrency import Pulse, WakeUp
from dcocpp.ocpp import authkey, transport
from dcocpp.ocpp.authcache import AuthorizationCache, cache_enabled
from dcocpp.ocpp.certificates.chargepoint import ChargePointCertificates
from dcocpp.ocpp.certificates.store import CertificateStore
from dcocpp.ocpp.certificates.tls import CentralSystemTrust
from dcocpp.ocpp.configuration import ConfigurationError, ConfigurationStore
from dcocpp.ocpp.control import ChargePointControl, ConnectorStatus
from dcocpp.ocpp.diagnostics import DiagnosticsService, LogService
from dcocpp.ocpp.errors import (
    CallError,
    ConnectionLost,
    InvalidPayload,
    OcppError,
    TransportError,
    UntrustedCertificate,
)
from dcocpp.ocpp.firmware import FirmwareService
from dcocpp.ocpp.handlers import CoreHandlers
from dcocpp.ocpp.locallist import LocalAuthorizationList, list_enabled
from dcocpp.ocpp.messagelog import MessageLog
from dcocpp.ocpp.registration import Registration, RegistrationMachine
from dcocpp.ocpp.rpc import RpcConnection
from dcocpp.ocpp.securitylog.events import sent_to_central_system
from dcocpp.ocpp.securityprofile import FALLBACK_ATTEMPTS, Fallback, SecurityProfiles, refusal
from dcocpp.ocpp.services import Identity
from dcocpp.ocpp.smartcharging.service import ChargingProfiles
from dcocpp.ocpp.statuses import allowed_transitions
from dcocpp.ocpp.traffic import LinkTraffic
from dcocpp.ocpp.wire import MAX_WEBSOCKET_MESSAGE_BYTES

log = logging.getLogger("dcocpp.session")

# Queues a security event: (the whitepaper's type, techInfo).
SecurityEvents = Callable[[str, str | None], Awaitable[None]]
# Writes another entry to the security log: (what, the detail).
SecurityNotes = Callable[[str, str], Awaitable[None]]
# Told the central system's time (currentTime), the round trip (s) of the CALL whose answer
# brought it, and that CALL's action.
CentralTime = Callable[[datetime, float, str], object]

# The WebSocket upgrade (TCP, TLS, HTTP) must finish within this many seconds.
CONNECT_TIMEOUT = 20.0
# BootNotification.conf with interval 0 means "choose yourself" for Pending/Rejected.
DEFAULT_BOOT_RETRY = 60
# A Pending/Rejected interval is waited out, up to a day: 2^31 s (68 years) would leave a charger
# out of service until someone restarts it, though its central system may be fixed by morning.
MAX_BOOT_RETRY = 24 * 3600
# StatusNotifications per connector: this many at once, then one per STATUS_INTERVAL seconds
# (what changes meanwhile is coalesced, see `report_status`).
STATUS_BURST = 5
STATUS_INTERVAL = 0.5
# A connector's statuses not sent yet: never more than this many (see `_coalesced`).
STATUS_QUEUE_LIMIT = 12
# How long a task that met the closed WebSocket waits for the reader to see the close.
CLOSE_GRACE = 1.0
# At security profile 3 the charge point certificate is looked at this often (and once
# registered): a day, as its renewal margin is counted in days.
CERTIFICATE_CHECK_INTERVAL = 24 * 3600.0


class _ConnectFailed(Exception):
    """Carries a failed connect out of the connection nursery."""


class ResponseTimeout(OcppError):
    """The central system did not answer a CALL within ResponseTimeout seconds."""


@attrs.frozen
class ConnectionFailure:
    """The latest failed connection attempt (or lost connection) to the central system."""

    url: str  # the URL connected to, with the charge point id
    reason: str  # in an operator's words: refused, host not found, the TLS problem, HTTP 404
    at: str  # OCPP dateTime of this failure
    since: str  # of the first failure since a connection last opened
    attempts: int  # failures since a connection last opened (this one included)


class ChargePointSession:
    """The OCPP-J client of one charge point.

    Starts nothing until `run()`. `run()` reports readiness at once (the charger must work
    without its CSMS) and runs until cancelled; on cancellation the WebSocket is closed politely.
    Only `trio.Cancelled` escapes it.
    """

    def __init__(
        self,
        identity: Identity,
        csms_url: str,
        store: ConfigurationStore,
        control: ChargePointControl,
        *,
        tls: CentralSystemTrust | None = None,
        certificates: CertificateStore | None = None,
        charge_point_certificates: ChargePointCertificates | None = None,
        security_profiles: SecurityProfiles | None = None,
        security_events: SecurityEvents | None = None,
        security_notes: SecurityNotes | None = None,
        open_stream: transport.OpenStream | None = None,
        auth_cache: AuthorizationCache | None = None,
        local_list: LocalAuthorizationList | None = None,
        charging_profiles: ChargingProfiles | None = None,
        diagnostics: DiagnosticsService | None = None,
        logs: LogService | None = None,
        firmware: FirmwareService | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] | None = None,
        central_time: CentralTime | None = None,
        traffic: LinkTraffic | None = None,
    ):
        self.identity = identity
        self._configured_url = csms_url
        # The profile the central system set, and its fallback.
        self.security_profiles = (
            SecurityProfiles() if security_profiles is None else security_profiles
        )
        self.last_failure: ConnectionFailure | None = None
        # What the link did (the console, /metrics): the station's, kept across soft resets.
        self.traffic = traffic if traffic is not None else LinkTraffic()
        self._failing = False  # no connection has opened since `last_failure`
        self.store = store
        self.control = control
        # `is None`, not `or`: an empty cache or list is falsy (it has a length).
        self.auth_cache = AuthorizationCache() if auth_cache is None else auth_cache
        self.local_list = LocalAuthorizationList() if local_list is None else local_list
        self.charging_profiles = (
            ChargingProfiles(store) if charging_profiles is None else charging_profiles
        )
        self.diagnostics = diagnostics
        self.logs = logs
        self.firmware = firmware
        self._tls = tls  # wss:// only
        # None: no certificate store (InstallCertificate and its kin cannot be served).
        self.certificates = certificates
        # None: no charge point certificate can be requested or installed.
        self.charge_point_certificates = charge_point_certificates
        if charge_point_certificates is not None:
            charge_point_certificates.send_csr = self._sign_certificate
        self._certificate_requested = -math.inf  # trio time of the last renewal request
        self._security_events = security_events
        self._security_notes = security_notes
        self._open_stream = open_stream
        self._rng = rng or random.Random()
        self._clock = clock or (lambda: datetime.now(UTC))  # the time of connection failures
        self._central_time = central_time
        self.registration = RegistrationMachine(on_change=self._on_registration_change)
        self._registration_changed = Pulse()
        self._rpc: RpcConnection | None = None
        self._connections = 0
        self._connection_scope: trio.CancelScope | None = None
        self._boot_now = WakeUp()
        # A resumed registration whose first Heartbeat has not been answered yet.
        self._resume_unconfirmed = False
        # No BootNotification before this (trio time), unless triggered: a Pending or Rejected
        # answer's interval holds on a new connection too (4.2).
        self._next_boot = float("-inf")
        self._answered = False  # the central system answered a CALL on this connection
        self._heartbeat_scope: trio.CancelScope | None = None
        self._last_heartbeat = 0.0
        # Per connector: (status, since when) not yet sent, oldest first, coalesced.
        self._status_queue: dict[int, list[_Entry]] = {}
        self._status_sent: dict[int, tuple[str, str]] = {}  # (status, errorCode) last delivered
        self._status_in_flight: dict[int, ConnectorStatus] = {}
        # Per connector, when its next StatusNotification would be due at the sustained rate
        # (the theoretical arrival time of a GCRA: STATUS_BURST may go before it).
        self._status_tat: dict[int, float] = {}
        self._status_ready = WakeUp()
        self._handlers = CoreHandlers(self)
        store.subscribe("HeartbeatInterval", self._on_heartbeat_interval)

    # --- public API --------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.registration.is_connected

    @property
    def csms_url(self) -> str:
        """The URL connected to: the configured one, `wss://` at security profile 2 and 3."""
        return self.security_profiles.url(self._configured_url)

    @property
    def endpoint(self) -> str:
        """What is connected to: `csms_url` with the charge point id appended."""
        return transport.endpoint_url(self.csms_url, self.identity.charge_point_id)

    @property
    def state(self) -> Registration:
        return Registration(self.registration.state)

    def report_status(self, status: ConnectorStatus) -> None:
        """Queue a StatusNotification, coalesced with what the connector reported before
        that has not gone out yet: the queue keeps the shortest run of statuses that leads
        from the last one sent (or in flight) to this one through transitions the OCPP 1.6
        table allows. A connector that passes through Available on its way to Reserved
        reports both (Finishing -> Reserved is not allowed); one that went Preparing and back
        to Available meanwhile reports nothing. A LocalListConflict is an event, never
        coalesced away."""
        cid = status.connector_id
        queue = self._status_queue.setdefault(cid, [])
        if queue and _same(queue[-1][0], status):
            return  # still the same: keep the time it began (MinimumStatusDuration)
        sent = self._status_in_flight.get(cid)
        anchor = sent.status if sent is not None else None
        if anchor is None and cid in self._status_sent:
            anchor = ChargePointStatus(self._status_sent[cid][0])
        table = allowed_transitions("chargePoint" if cid == 0 else "connector")
        queue[:] = _coalesced(anchor, queue, (status, trio.current_time()), table)
        self._status_ready.set()

    async def call(self, payload: Any, *, triggered: bool = False) -> Any:
        """Send a CALL on the current connection and return its result dataclass.

        Waits until registration is Accepted (BootNotification, and messages requested by a
        TriggerMessage, may go out before). Raises `ConnectionLost` when there is no connection,
        `ResponseTimeout`, `CallError`, or `InvalidPayload`."""
        if not (triggered or isinstance(payload, call.BootNotification)):
            while not self.registration.accepted:
                if not self.registration.is_connected:
                    raise ConnectionLost("not connected to the central system")
                await self._registration_changed.wait()
        rpc = self._rpc
        if rpc is None or rpc.closed:
            await trio.lowlevel.checkpoint()  # callers retry in loops: never spin without one
            raise ConnectionLost("not connected to the central system")
        timeout = self.store.get_int("ResponseTimeout")
        with trio.move_on_after(timeout) as scope:
            result = await rpc.call(payload)
            self._answered = True
            return result
        assert scope.cancelled_caught
        raise ResponseTimeout(f"no answer to {type(payload).__name__} within {timeout} s")

    @property
    def connection_number(self) -> int:
        """Counts connections; tells a caller whether a retry would use a new one."""
        return self._connections

    async def wait_until_accepted(self, *, after_connection: int | None = None) -> None:
        """Until registration is Accepted (on a connection newer than `after_connection`)."""
        while not self.registration.accepted or (
            after_connection is not None and self._connections <= after_connection
        ):
            await self._registration_changed.wait()

    async def remember_authorization(self, id_tag: str, id_tag_info: dict[str, Any]) -> None:
        """Fill the authorization cache from any answer carrying an idTagInfo (OCPP 1.6
        3.5.1). A tag in the local list is never cached (3.5.3) and its entry is not changed
        (3.5.2: only SendLocalList does that); an answer that contradicts the entry is
        reported as a LocalListConflict (3.5.2)."""
        if list_enabled(self.store):
            listed = self.local_list.lookup(id_tag)
            if listed is not None:
                if _validity(listed) != _validity(id_tag_info):
                    log.warning(
                        "the central system says %s is %s; the local list says %s",
                        id_tag,
                        id_tag_info["status"],
                        listed["status"],
                    )
                    self._report_local_list_conflict(id_tag)
                return
        if cache_enabled(self.store):
            await self.auth_cache.update(id_tag, id_tag_info)

    def _report_local_list_conflict(self, id_tag: str) -> None:
        """StatusNotification of connector 0 with errorCode LocalListConflict (3.5.2);
        `_send_statuses` follows it with the charge point's own status again, so that the
        conflict reads as an event and the next one is reported too."""
        own = self.control.statuses()[0]
        self.report_status(
            attrs.evolve(
                own,
                error_code=ChargePointErrorCode.local_list_conflict,
                info=f"idTag {id_tag}",  # CiString50: an idTag is at most 20
            )
        )

    def reconnect(self, reason: str) -> None:
        """Drop the current connection (e.g. new credentials); `run()` connects again."""
        if self._connection_scope is not None:
            log.info("reconnecting: %s", reason)
            self._reconnecting = reason
            self._connection_scope.cancel()

    def boot_now(self) -> None:
        """Send BootNotification again at once (TriggerMessage)."""
        self._boot_now.set()

    def heartbeat_now(self) -> None:
        """A Heartbeat at once once Accepted (its answer brings the central system's time)."""
        self._last_heartbeat = float("-inf")
        if self._heartbeat_scope is not None:
            self._set_heartbeat_deadline()

    # --- the connection loop -----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        failures = 0
        while True:
            self._report_security_profile()
            self.registration.connect()
            self._reconnecting = None
            reason = "connection closed"
            try:
                reason = await self._serve_one_connection()
            except TransportError as exc:
                reason = str(exc)
            was_accepted = self.registration.state == Registration.ACCEPTED
            # A connection that got as far as Accepted, with an answer from the central system
            # (a resumed registration is Accepted at once), resets the backoff.
            failures = 0 if was_accepted and self._answered else failures + 1
            delay = self._backoff(failures)
            retry = f"next attempt in {delay:.1f} s"
            self.traffic.connected_since = None
            self.traffic.next_attempt_at = ocpp_time(self._clock() + timedelta(seconds=delay))
            if self.registration.is_connected:
                # A connection that was up and went away is news every time, unless we
                # dropped it ourselves.
                if self._reconnecting is not None:
                    self.registration.connection_lost(
                        reason=f"reconnecting ({self._reconnecting}); {retry}"
                    )
                else:
                    self._record_failure(reason)
                    self.registration.connection_lost(
                        reason=f"connection to {self.endpoint} lost: {reason}; {retry}",
                        level=logging.WARNING,
                    )
            else:
                previous = self.last_failure if self._failing else None
                repeated = previous is not None and previous.reason == reason
                failure = self._record_failure(reason)
                self.registration.connect_failed(
                    reason=f"cannot connect to {self.endpoint}: {reason}; {retry}"
                    + (f" (attempt {failure.attempts})" if repeated else ""),
                    level=logging.DEBUG if repeated else logging.WARNING,
                )
                if self._drop_event is not None and not repeated:
                    # Once per change of the failure, as the line above: not per attempt.
                    await self.security_event(self._drop_event, reason)
                await self._profile_attempt_failed(reason)
            await trio.sleep(delay)

    def _record_failure(self, reason: str) -> ConnectionFailure:
        now = ocpp_time(self._clock())
        previous = self.last_failure if self._failing else None
        self.last_failure = failure = ConnectionFailure(
            url=self.endpoint,
            reason=reason,
            at=now,
            since=previous.since if previous is not None else now,
            attempts=previous.attempts + 1 if previous is not None else 1,
        )
        self._failing = True
        self.traffic.connection_failures += 1
        return failure

    def _connected_reason(self) -> str:
        text = f"connected to {self.endpoint}"
        if self._failing and self.last_failure is not None:
            failure = self.last_failure
            text += f" after {failure.attempts} failure(s) since {failure.since}"
        self._failing = False
        if self.registration.registered:
            text += "; registration resumed without BootNotification"
        return text

    def security_profile_in_use(self) -> int:
        """The security profile the next connection really uses: the URL's scheme, an
        AuthorizationKey, a client certificate."""
        url = self.csms_url
        tls = self._tls
        return transport.security_profile(
            url,
            authorization_key=bool(self.store.get("AuthorizationKey")),
            client_certificate=url.startswith("wss")
            and tls is not None
            and tls.client_certificate(self._wants_client_certificate()),
        )

    def security_profile_target(self) -> int:
        """The profile the charger is at: the one in use, or the higher one the central
        system set (at 3 without a usable certificate, the connection uses 2)."""
        return max(self.security_profile_in_use(), self.security_profiles.profile or 0)

    def _wants_client_certificate(self) -> bool:
        """A client certificate is presented at profile 3, or, while the central system has
        set no profile, whenever the configuration provides one."""
        return self.security_profiles.profile in (None, 3)

    def change_security_profile(self, value: str) -> ConfigurationStatus:
        """ChangeConfiguration of SecurityProfile: Accepted for a higher profile whose
        prerequisites hold (persisted before the answer; `after_change_configuration`
        reconnects with it), Rejected otherwise."""
        text = value.strip()
        if text not in ("0", "1", "2", "3"):
            log.warning("SecurityProfile %r refused: there are profiles 0 to 3", value[:10])
            return ConfigurationStatus.rejected
        new, current = int(text), self.security_profile_target()
        tls = self._tls
        why = refusal(
            new,
            current=current,
            authorization_key=bool(self.store.get("AuthorizationKey")),
            csms_root=tls is not None and tls.has_roots(),
            client_certificate=tls is not None and tls.client_certificate(True),
        )
        if why is not None:
            log.warning("SecurityProfile %d refused: %s", new, why)
            return ConfigurationStatus.rejected
        try:
            self.security_profiles.switch(new, current)
        except OSError as exc:
            log.error("SecurityProfile %d refused: it cannot be stored: %s", new, exc)
            return ConfigurationStatus.rejected
        log.info("SecurityProfile %d accepted (from %d): reconnecting with it", new, current)
        return ConfigurationStatus.accepted

    async def _sign_certificate(self, csr: str) -> bool:
        """SignCertificate with `csr` (`ChargePointCertificates.send_csr`); whether the
        central system accepted it."""
        try:
            result = await self.call(call.SignCertificate(csr=csr))
        except (CallError, InvalidPayload, ConnectionLost, ResponseTimeout) as exc:
            log.warning("SignCertificate failed: %s", exc)
            return False
        if result.status != GenericStatus.accepted:
            log.warning("the central system rejected the certificate signing request")
            return False
        return True

    async def _renew_certificate(self) -> None:
        """At security profile 3, a new charge point certificate when there is none or it
        expires within the renewal margin; looked at once registered and every
        CERTIFICATE_CHECK_INTERVAL, and asked for at most once per interval (the answer,
        CertificateSigned, may take the central system a while)."""
        certificates = self.charge_point_certificates
        if certificates is None:
            return
        await self.wait_until_accepted()
        while True:
            reason = certificates.renewal_reason()
            due = trio.current_time() - self._certificate_requested >= CERTIFICATE_CHECK_INTERVAL
            if reason is not None and due and self.security_profile_target() >= 3:
                log.info("requesting a new charge point certificate: %s", reason)
                self._certificate_requested = trio.current_time()
                await certificates.request_certificate()
            await trio.sleep(CERTIFICATE_CHECK_INTERVAL)

    async def _profile_connected(self) -> None:
        """A connection opened: a profile on trial has proved itself."""
        confirmed = self.security_profiles.connected()
        if confirmed is not None:
            before, after = confirmed
            log.info("SecurityProfile %d connected: it replaces %d", after, before)
            await self.security_event(
                "ReconfigurationOfSecurityParameters", f"SecurityProfile {before} -> {after}"
            )

    async def _profile_attempt_failed(self, reason: str) -> None:
        """A connection attempt failed: after the last one a profile on trial gets, the
        previous profile comes back, with the security event that names the failure."""
        fallback = self.security_profiles.attempt_failed(reason, ocpp_time(self._clock()))
        if fallback is None:
            return
        log.warning(
            "SecurityProfile %d could not connect in %d attempts (%s): back to profile %d",
            fallback.failed,
            FALLBACK_ATTEMPTS,
            fallback.reason,
            fallback.restored,
        )
        # The whitepaper's event: the central system's certificate when that failed, else the
        # change of security parameters the fallback is.
        kind = (
            "InvalidCentralSystemCertificate"
            if self._untrusted
            else "ReconfigurationOfSecurityParameters"
        )
        await self.security_event(kind, _fallback_info(fallback))

    async def security_event(self, kind: str, tech_info: str | None = None) -> None:
        """Write a security event to the security log, and queue a SecurityEventNotification
        where the whitepaper says so (see `dcocpp.ocpp.securitylog.events`): `kind` is the
        whitepaper's type. On the console at WARNING when the central system hears of it too
        (a critical event), else at INFO."""
        level = logging.WARNING if sent_to_central_system(kind) else logging.INFO
        log.log(level, "security event %s%s", kind, f": {tech_info}" if tech_info else "")
        if self._security_events is not None:
            # techInfo is a CiString255.
            await self._security_events(kind, None if tech_info is None else tech_info[:255])

    async def security_note(self, entry: str, detail: str) -> None:
        """Write another entry to the security log (what the charger trusts changed)."""
        log.info("security log: %s: %s", entry, detail)
        if self._security_notes is not None:
            await self._security_notes(entry, detail)

    def _report_security_profile(self) -> None:
        """SecurityProfile reports the profile the next connection really uses (the base file
        cannot know whether an AuthorizationKey or a client certificate is installed)."""
        profile = self.security_profile_in_use()
        if self.store.get("SecurityProfile") in (None, str(profile)):
            return
        try:
            self.store.set_value("SecurityProfile", profile)
        except ConfigurationError as exc:
            log.error("SecurityProfile not updated to %d: %s", profile, exc)

    def _backoff(self, failures: int) -> float:
        """Exponential backoff, capped, with jitter in [cap/2, cap] so that a fleet of chargers
        does not reconnect in lockstep and a single charger never busy-loops."""
        low = max(0.1, float(self.store.get_int("RetryBackoffWaitMinimum")))
        high = max(low, float(self.store.get_int("RetryBackoffWaitMaximum")))
        ceiling = min(high, low * 2 ** max(0, failures - 1))
        return ceiling * self._rng.uniform(0.5, 1.0)

    async def _serve_one_connection(self) -> str:
        """Connect and run until the connection ends; returns why it ended.

        Raises `TransportError` when the connection could not be opened."""
        self._drop_reason = self._drop_event = None
        rpc: RpcConnection | None = None
        try:
            with trio.CancelScope() as scope:
                self._connection_scope = scope
                async with trio.open_nursery() as nursery:
                    ws = await self._open(nursery)
                    if ws is None:
                        raise _ConnectFailed(self._drop_reason or "connection failed")
                    traffic = self.traffic
                    rpc = RpcConnection(
                        ws,
                        self._handlers,
                        message_log=MessageLog("csms", tap=traffic.frame),
                        answers=self._answers,
                        traffic=traffic,
                    )
                    traffic.connections += 1
                    traffic.connected_since = ocpp_time(self._clock())
                    traffic.next_attempt_at = None
                    self._rpc = rpc
                    self._answered = False
                    self._connections += 1
                    self.registration.connected(reason=self._connected_reason())
                    await self._profile_connected()
                    for task in (
                        self._register,
                        self._send_statuses,
                        self._heartbeat,
                        self._ping,
                        self._renew_certificate,
                    ):
                        nursery.start_soon(self._guard, task, nursery.cancel_scope)
                    await rpc.run()
                    nursery.cancel_scope.cancel()
        except* _ConnectFailed as group:
            raise TransportError(str(group.exceptions[0])) from None
        finally:
            self._rpc = None
            self._connection_scope = None
        if rpc is not None and rpc.close_reason is not None:
            # What closed the WebSocket, rather than what a task saw of it (a CALL that lost
            # its connection).
            return _how_closed(rpc.close_reason, here=rpc.closed_here)
        if self._drop_reason:
            return self._drop_reason
        return (
            "connection dropped"
            if scope.cancelled_caught
            else "connection closed by the central system"
        )

    async def _open(self, nursery: trio.Nursery) -> Any:
        """Open the WebSocket in `nursery` (which keeps its reader) within CONNECT_TIMEOUT.
        Over TLS, a server certificate that fails to verify against the installed CSMS roots
        is tried against the root they replaced, while that is kept as the fallback."""
        run_client = partial(
            transport.run_client,
            self.csms_url,
            charge_point_id=self.identity.charge_point_id,
            password=self._password(),
        )
        if self._open_stream is not None:
            run_client = partial(run_client, open_stream=self._open_stream)
        contexts: list[ssl.SSLContext | None] = [None]
        if self._tls is not None and self.csms_url.startswith("wss"):
            contexts = list(self._tls.contexts(client_certificate=self._wants_client_certificate()))
        self._untrusted = False
        with trio.move_on_after(CONNECT_TIMEOUT):
            for index, context in enumerate(contexts):
                try:
                    ws = await nursery.start(partial(run_client, ssl_context=context))
                except UntrustedCertificate as exc:
                    self._untrusted = True
                    self._drop_reason, self._drop_event = str(exc), exc.security_event
                    if index + 1 < len(contexts):
                        log.info("%s; trying the replaced CSMS root (the fallback)", exc)
                    continue
                except TransportError as exc:
                    self._drop_reason, self._drop_event = str(exc), exc.security_event
                    return None
                if self._tls is not None:
                    self._tls.verified(index)
                return ws
            return None
        self._drop_event = None
        self._drop_reason = (
            f"no answer within {CONNECT_TIMEOUT:g} s (TCP, TLS and WebSocket handshake)"
        )
        return None

    def _password(self) -> bytes | None:
        key = self.store.get("AuthorizationKey")
        return authkey.password(key) if key else None

    _drop_reason: str | None = None
    _drop_event: str | None = None  # the security event the failed connect is, if any
    _reconnecting: str | None = None  # why `reconnect` drops the connection on purpose
    _untrusted = False  # the last attempt failed on the central system's certificate

    async def _guard(self, task: Callable[[], Any], connection: trio.CancelScope) -> None:
        """Run a per-connection task; a broken connection ends the whole connection. So does
        any other error of the OCPP layer that a task did not handle itself (each handles the
        central system's CALLERRORs and invalid answers): a new connection starts every task
        afresh, where letting the error through would end the process."""
        try:
            await task()
        except (ConnectionLost, ResponseTimeout) as exc:
            self._drop_reason = str(exc)
            rpc = self._rpc
            closed = rpc.websocket.closed if rpc is not None else None
            if rpc is not None and closed is not None:
                # A CALL met the closed WebSocket, which says only that: its reader ends too
                # and tells how, and who closed it (`_serve_one_connection`). Not waited for
                # long: a close handshake may hang on a dead link.
                self._drop_reason = _how_closed(closed, here=None)
                with trio.move_on_after(CLOSE_GRACE):
                    await rpc.wait_ended()
            connection.cancel()
        except OcppError as exc:
            log.error("%s failed: %s; reconnecting", task.__name__.lstrip("_"), exc)
            self._drop_reason = f"{task.__name__.lstrip('_')} failed: {exc}"
            connection.cancel()

    def _answers(self, action: str) -> bool:
        """Whether a CALL of the central system is answered now: not while Rejected (4.2:
        the charge point does not respond then, and the central system should not send)."""
        if self.registration.state != Registration.REJECTED:
            return True
        log.warning(
            "%s from the central system not answered: the registration is Rejected (OCPP 1.6 4.2)",
            action,
        )
        return False

    def _on_registration_change(self, old: Registration, new: Registration, reason: str) -> None:
        self._registration_changed.fire()
        self._status_ready.set()
        if new == Registration.ACCEPTED:
            # After every boot and every resumed registration, every connector's status again.
            self._status_sent.clear()
            for status in self.control.statuses():
                self._status_queue[status.connector_id] = [(status, float("-inf"))]
            if old == Registration.CONNECTING:
                # Resumed: a Heartbeat at once brings the central system's time, as the
                # BootNotification.conf would have, and tells whether it still knows us.
                self._last_heartbeat = float("-inf")
                self._resume_unconfirmed = True

    # --- per-connection tasks ----------------------------------------------------------------

    async def _register(self) -> None:
        """BootNotification until Accepted (OCPP 1.6 section 4.2), not before the interval of
        a Pending or Rejected answer has passed; again only when triggered. A registration
        resumed on this connection sends none."""
        while True:
            if self.registration.accepted:
                await self._boot_now.wait()  # only a TriggerMessage boots again
            else:
                with trio.move_on_at(self._next_boot):
                    await self._boot_now.wait()
            self._boot_now.clear()
            boot = call.BootNotification(
                charge_point_vendor=self.identity.vendor,
                charge_point_model=self.identity.model,
                firmware_version=self.identity.firmware_version,
                charge_point_serial_number=self.identity.serial_number,
                # Deprecated in 1.6, but libocpp and many central systems still read it.
                charge_box_serial_number=self.identity.serial_number,
            )
            retry_after: float = DEFAULT_BOOT_RETRY
            sent = trio.current_time()
            try:
                result = await self.call(boot)
            except (CallError, InvalidPayload) as exc:
                log.warning("BootNotification failed: %s", exc)
            else:
                status = RegistrationStatus(result.status)
                if status != RegistrationStatus.rejected:
                    self._tell_time(result.current_time, sent, "BootNotification")
                if result.interval > 0:
                    retry_after = min(result.interval, MAX_BOOT_RETRY)
                    if result.interval > MAX_BOOT_RETRY and status != RegistrationStatus.accepted:
                        log.warning(
                            "the central system asks to wait %d s before the next"
                            " BootNotification: waiting %d s (at most a day)",
                            result.interval,
                            MAX_BOOT_RETRY,
                        )
                if status == RegistrationStatus.accepted:
                    if result.interval > 0:
                        self._adopt_heartbeat_interval(result.interval)
                    self._last_heartbeat = trio.current_time()
                    self.registration.boot_accepted()
                    continue
                if status == RegistrationStatus.pending:
                    self.registration.boot_pending(reason=f"retry in {retry_after:g} s")
                else:
                    self.registration.boot_rejected(reason=f"retry in {retry_after:g} s")
            self._next_boot = trio.current_time() + retry_after

    def _adopt_heartbeat_interval(self, interval: int) -> None:
        """The interval of an Accepted BootNotification. One that cannot be stored (a full or
        broken disk) does not undo the registration: the heartbeat keeps its interval."""
        try:
            self.store.set_value("HeartbeatInterval", interval)
        except ConfigurationError as exc:
            log.error("HeartbeatInterval %d from BootNotification not taken: %s", interval, exc)

    async def _heartbeat(self) -> None:
        """Heartbeat every HeartbeatInterval seconds once Accepted; a changed interval moves
        the pending deadline at once (see `_on_heartbeat_interval`)."""
        while True:
            while not self.registration.accepted:
                await self._registration_changed.wait()
            with trio.CancelScope() as scope:
                self._heartbeat_scope = scope
                self._set_heartbeat_deadline()
                await trio.sleep_forever()
            self._heartbeat_scope = None
            if self.registration.accepted:
                try:
                    await self.send_heartbeat()
                except (CallError, InvalidPayload) as exc:
                    # The central system is there (it answered): nothing to retry before the
                    # next interval.
                    log.warning("Heartbeat failed: %s", exc)

    async def send_heartbeat(self, *, triggered: bool = False) -> None:
        self._last_heartbeat = trio.current_time()
        if self._heartbeat_scope is not None:
            self._set_heartbeat_deadline()
        sent = trio.current_time()
        try:
            result = await self.call(call.Heartbeat(), triggered=triggered)
        except CallError:
            if self._resume_unconfirmed:
                # A central system that lost its state refuses a charger it no longer knows:
                # a reconnect is not a reboot, unless the central system needs one.
                log.warning(
                    "the central system refused the Heartbeat of a resumed registration:"
                    " BootNotification again"
                )
                self._resume_unconfirmed = False
                self.boot_now()
            raise
        self._resume_unconfirmed = False
        self.traffic.heartbeat_at = ocpp_time(self._clock())
        self.traffic.heartbeat_round_trip_s = trio.current_time() - sent
        log.debug("heartbeat answered, central system time %s", result.current_time)
        self._tell_time(result.current_time, sent, "Heartbeat")

    def _tell_time(self, current_time: str, sent: float, action: str) -> None:
        """Hand the central system's currentTime to `central_time` (one it cannot read is
        logged and left)."""
        if self._central_time is None:
            return
        try:
            central = parse_ocpp_time(current_time)
        except ValueError:
            log.warning("%s.conf: currentTime %r is no date and time", action, current_time)
            return
        self._central_time(central, trio.current_time() - sent, action)

    def _set_heartbeat_deadline(self) -> None:
        assert self._heartbeat_scope is not None
        interval = self.store.get_int("HeartbeatInterval")
        self._heartbeat_scope.deadline = (
            self._last_heartbeat + interval if interval > 0 else float("inf")
        )

    def _on_heartbeat_interval(self, key: str, value: str) -> None:
        if self._heartbeat_scope is not None:
            self._set_heartbeat_deadline()

    async def _ping(self) -> None:
        """WebSocket ping every WebSocketPingInterval s; no pong within one interval means
        the link is dead (a NAT dropped it, the CSMS hung), so reconnect."""
        rpc = self._rpc
        assert rpc is not None
        while True:
            interval = self.store.get_int("WebSocketPingInterval")
            if interval <= 0:
                await trio.sleep(60)  # disabled; look at the key again later
                continue
            await trio.sleep(interval)
            sent = trio.current_time()
            with trio.move_on_after(interval) as scope:
                try:
                    await rpc.websocket.ping()
                    self.traffic.ping_round_trip_s = trio.current_time() - sent
                except Exception as exc:  # trio_websocket.ConnectionClosed; ping() may raise more
                    raise ConnectionLost(f"ping failed: {exc}") from exc
            if scope.cancelled_caught:
                raise ConnectionLost(f"no WebSocket pong within {interval} s")

    async def _send_statuses(self) -> None:
        """Deliver each connector's queued statuses, in order, once the latest has held for
        MinimumStatusDuration and within the connector's rate (STATUS_BURST, then one per
        STATUS_INTERVAL); neither a status that came and went in between nor one the
        central system already has is sent."""
        while True:
            now = trio.current_time()
            due = {
                cid: self._status_due(cid, queue)
                for cid, queue in self._status_queue.items()
                if self._drop_known(cid, queue)
            }
            if not (due and self.registration.accepted):
                # No await between the check and the clear: nothing can slip in between.
                self._status_ready.clear()
                await self._status_ready.wait()
                continue
            if min(due.values()) > now:
                self._status_ready.clear()
                with trio.move_on_at(min(due.values())):
                    await self._status_ready.wait()
                continue
            for connector_id in sorted(cid for cid, at in due.items() if at <= now):
                queue = self._status_queue[connector_id]
                # Each send awaits: what was due may have changed meanwhile.
                while (
                    self._drop_known(connector_id, queue)
                    and self._status_due(connector_id, queue) <= trio.current_time()
                ):
                    await self._send_queued(connector_id, queue)

    def _drop_known(self, connector_id: int, queue: list[_Entry]) -> bool:
        """Take the statuses the central system already has off the front of `queue`;
        whether any is left to send."""
        while queue and self._status_sent.get(connector_id) == _key(queue[0][0]):
            queue.pop(0)
        return bool(queue)

    def _status_due(self, connector_id: int, queue: list[_Entry]) -> float:
        """When the first of a connector's queued statuses may go: once the latest has held
        for MinimumStatusDuration, and the connector's rate allows one more."""
        held = queue[-1][1] + self._minimum_status_duration()
        allowed = self._status_tat.get(connector_id, -math.inf) - (
            (STATUS_BURST - 1) * STATUS_INTERVAL
        )
        return max(held, allowed)

    async def _send_queued(self, connector_id: int, queue: list[_Entry]) -> None:
        status, since = queue.pop(0)
        now = trio.current_time()
        tat = self._status_tat.get(connector_id, -math.inf)
        self._status_tat[connector_id] = max(tat, now) + STATUS_INTERVAL
        self._status_in_flight[connector_id] = status
        try:
            await self.send_status(status)
        except (CallError, InvalidPayload) as exc:
            # Delivered with an error, not resent: the central system received it (it
            # answered), and the same status would get the same answer.
            log.warning("StatusNotification for connector %d failed: %s", connector_id, exc)
        except BaseException:
            # Not delivered: keep it unless something newer arrived meanwhile.
            if not queue:
                queue.append((status, since))
            raise
        finally:
            del self._status_in_flight[connector_id]
        self._status_sent[connector_id] = _key(status)
        # A conflict is an event, not a state: the charge point's own status follows.
        if status.error_code == ChargePointErrorCode.local_list_conflict and not queue:
            self.report_status(self.control.statuses()[0])

    def _minimum_status_duration(self) -> float:
        value = self.store.get("MinimumStatusDuration")
        return float(value) if value else 0.0

    async def send_status(self, status: ConnectorStatus, *, triggered: bool = False) -> None:
        await self.call(
            call.StatusNotification(
                connector_id=status.connector_id,
                error_code=status.error_code,
                status=status.status,
                info=status.info,
                vendor_error_code=status.vendor_error_code,
                timestamp=status.timestamp,
            ),
            triggered=triggered,
        )


def _fallback_info(fallback: Fallback) -> str:
    return (
        f"SecurityProfile {fallback.failed} could not connect ({fallback.reason});"
        f" back to {fallback.restored}"
    )


def _how_closed(reason: CloseReason, *, here: bool | None) -> str:
    """How a WebSocket closed, for the operator: its close code, and who closed it (`here`:
    the charger; None: not known)."""
    if here:
        if reason.code == 1009:  # MESSAGE_TOO_BIG: above the transport's max_message_size
            return (
                "the charger closed it (WebSocket close 1009): a message from the central system"
                f" exceeded {MAX_WEBSOCKET_MESSAGE_BYTES} bytes"
            )
        return f"the charger closed it (WebSocket close {reason.code} {reason.name})"
    if reason.code == 1006:  # ABNORMAL_CLOSURE: no close frame came, the stream ended
        return "the connection ended without a WebSocket close (1006 ABNORMAL_CLOSURE)"
    detail = f": {reason.reason}" if reason.reason else ""
    code = f"WebSocket close {reason.code} {reason.name}{detail}"
    if here is None:
        return f"the WebSocket was closed ({code})"
    return f"closed by the central system ({code})"


def _validity(info: dict[str, Any]) -> str:
    """The status that matters for a conflict: 3.5.2 counts Accepted and ConcurrentTx alike
    as valid (ConcurrentTx only says the tag is charging elsewhere)."""
    status = str(info["status"])
    return AuthorizationStatus.accepted if status == AuthorizationStatus.concurrent_tx else status


_Entry = tuple[ConnectorStatus, float]  # a status not sent yet, and since when it holds


def _key(status: ConnectorStatus) -> tuple[str, str]:
    """What the central system must hear again when it changes."""
    return (status.status.value, status.error_code.value)


def _is_event(status: ConnectorStatus) -> bool:
    return status.error_code == ChargePointErrorCode.local_list_conflict


def _coalesced(
    anchor: ChargePointStatus | None,
    queue: list[_Entry],
    entry: _Entry,
    table: Mapping[ChargePointStatus, frozenset[ChargePointStatus]],
) -> list[_Entry]:
    """`queue` with `entry` appended, cut short: the fewest queued statuses kept (from the
    front) such that the step to `entry` is allowed from the last one kept, or from `anchor`
    (the status last sent or in flight; None: unknown, anything goes). The same status is not
    kept twice (the newer replaces it), so a connector never has more queued than there are
    statuses. An event (LocalListConflict) is never cut; a step the table does not know is
    appended as it is; beyond STATUS_QUEUE_LIMIT the oldest events go first."""
    status = entry[0].status
    start = max((i + 1 for i, (queued, _) in enumerate(queue) if _is_event(queued)), default=0)
    result = [*queue, entry]
    for kept in range(start, len(queue) + 1):
        before = queue[kept - 1][0] if kept else None
        previous = before.status if before is not None else anchor
        if previous is None or status in table.get(previous, ()):
            result = [*queue[:kept], entry]
            break
        if previous == status and (before is None or not _is_event(before)):
            result = [*queue[: max(0, kept - 1)], entry]
            break
    while len(result) > STATUS_QUEUE_LIMIT:
        events = [i for i, (queued, _) in enumerate(result[:-1]) if _is_event(queued)]
        del result[events[0] if events else 0]
    return result


def _same(a: ConnectorStatus, b: ConnectorStatus) -> bool:
    return (a.status, a.error_code, a.info, a.vendor_error_code) == (
        b.status,
        b.error_code,
        b.info,
        b.vendor_error_code,
    )
