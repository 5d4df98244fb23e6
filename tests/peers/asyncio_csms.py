"""An independent OCPP 1.6J central system (CSMS) for integration tests and benchmarks.

dcocpp did not write this: it is the ``ocpp`` package's own asyncio
``ocpp.v16.ChargePoint`` (with the package's default JSON schema validation)
served by the ``websockets`` asyncio server. It runs as a separate process::

    python -m tests.peers.asyncio_csms --port 0 --script steps.json --record events.jsonl

With ``--tls-cert``/``--tls-key`` it serves wss:// (TLS 1.2 or newer), with ``--tls-client-ca``
it requires a client certificate issued by that CA (security profile 3), and with
``--auth-key-hex`` it requires HTTP Basic auth whose password is that key's bytes (the
security whitepaper's AuthorizationKey, OCTT TC_085).

Once listening it prints ``LISTENING <port>`` on stdout, then one JSON object
per line for every event (see ``Recorder`` and ``Script``). It exits 0 on
SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import itertools
import json
import logging
import signal
import ssl
import sys
import time
import urllib.parse
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

from ocpp.charge_point import camel_to_snake_case, remove_nones, serialize_as_dict
from ocpp.charge_point import snake_to_camel_case as _snake_to_camel_case
from ocpp.exceptions import OCPPError
from ocpp.routing import on
from ocpp.v16 import ChargePoint as _V16ChargePoint
from ocpp.v16 import call, call_result, datatypes
from ocpp.v16.enums import (
    Action,
    AuthorizationStatus,
    DataTransferStatus,
    GenericStatus,
    RegistrationStatus,
)
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidHeader
from websockets.headers import build_www_authenticate_basic, parse_authorization_basic
from websockets.http11 import Request, Response

LOG = logging.getLogger("asyncio_csms")

SUBPROTOCOL = "ocpp1.6"
CALL, CALLRESULT, CALLERROR = 2, 3, 4


def utc_now() -> str:
    """Current time in UTC, ISO 8601 with a ``Z`` suffix (millisecond precision)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def id_tag_info(id_tag: str) -> datatypes.IdTagInfo:
    """Accepted for every tag, except INVALID*/BLOCKED*/EXPIRED* prefixes."""
    for prefix, status in (
        ("INVALID", AuthorizationStatus.invalid),
        ("BLOCKED", AuthorizationStatus.blocked),
        ("EXPIRED", AuthorizationStatus.expired),
    ):
        if id_tag.startswith(prefix):
            return datatypes.IdTagInfo(status=status)
    return datatypes.IdTagInfo(status=AuthorizationStatus.accepted)


class Recorder:
    """Writes events as JSON lines to stdout (always) and appends them to a file."""

    def __init__(self, record_path: str | None) -> None:
        self._file = open(record_path, "a", encoding="utf-8") if record_path else None  # noqa: SIM115

    def line(self, text: str, *, record: bool = True) -> None:
        for stream in (sys.stdout, self._file if record else None):
            if stream is None:
                continue
            try:
                stream.write(text + "\n")
                stream.flush()
            except (BrokenPipeError, ValueError):  # reader went away / closed
                pass

    def event(self, name: str, **fields: Any) -> None:
        self.line(json.dumps({"event": name, **fields}, default=str))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Csms:
    """Process-wide state shared by all connections."""

    def __init__(self, args: argparse.Namespace, recorder: Recorder) -> None:
        self.args = args
        self.rec = recorder
        self.boots_answered = 0
        self.transaction_ids = itertools.count(1)
        # cp_id -> the ChargePoint of its most recent connection (for the script).
        self.charge_points: dict[str, CsmsChargePoint] = {}
        # (cp_id, action) -> number of CALLs received and answered.
        self.call_counts: dict[tuple[str, str], int] = {}
        self.calls_changed = asyncio.Condition()
        self.script_cp_id: str | None = None
        self.script_task: asyncio.Task[None] | None = None

    def boot_status(self) -> RegistrationStatus:
        self.boots_answered += 1
        if self.boots_answered <= self.args.boot_accept_after:
            return RegistrationStatus(self.args.boot_status)
        return RegistrationStatus.accepted

    async def count_call(self, cp_id: str, action: str) -> None:
        async with self.calls_changed:
            key = (cp_id, action)
            self.call_counts[key] = self.call_counts.get(key, 0) + 1
            self.calls_changed.notify_all()

    def start_script(self, cp: CsmsChargePoint) -> None:
        if self.script_task is not None or self.args.script is None:
            return
        steps = json.loads(Path(self.args.script).read_text(encoding="utf-8"))
        self.script_cp_id = cp.id
        self.script_task = asyncio.get_running_loop().create_task(Script(self, cp.id, steps).run())


class CsmsChargePoint(_V16ChargePoint):
    """The package's v16 ChargePoint, with raw-frame interception for recording.

    ``route_message`` sees every text frame before the package routes it:

    * CALLs from the charge point are recorded verbatim (camelCase payload);
    * CALLRESULT/CALLERROR frames answering one of our raw frames are handed to
      the raw step waiting for them and not routed (the package would put them
      in its response queue and confuse the next ``call()``);
    * replies to our own ``call()``s are remembered verbatim (so results are
      recorded exactly as received) and then routed as usual.
    """

    def __init__(self, cp_id: str, connection: ServerConnection, csms: Csms) -> None:
        super().__init__(cp_id, connection)
        self.csms = csms
        self.connection = connection
        self.pending_call_id: str | None = None
        self.raw_replies: dict[str, list[Any]] = {}
        # unique id (or None = any unsolicited reply) -> future for the reply frame
        self.raw_waiters: dict[str | None, asyncio.Future[list[Any]]] = {}
        self._boot_accepted = False

    async def route_message(self, raw_msg: str | bytes) -> None:
        try:
            frame = json.loads(raw_msg)
        except (json.JSONDecodeError, UnicodeDecodeError):
            frame = None
        is_list = isinstance(frame, list) and len(frame) >= 2
        kind = frame[0] if is_list else None
        uid = frame[1] if is_list else None

        if kind in (CALLRESULT, CALLERROR):
            if uid == self.pending_call_id:
                self.raw_replies[uid] = frame
            else:
                waiter = self.raw_waiters.get(uid) or self.raw_waiters.get(None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(frame)
                    return
        action = None
        if kind == CALL and len(frame) >= 3:
            action = frame[2]
            self.csms.rec.event(
                "call",
                cp_id=self.id,
                action=action,
                payload=frame[3] if len(frame) >= 4 else None,
                time=time.time(),
            )

        self._boot_accepted = False
        await super().route_message(raw_msg)

        if isinstance(action, str):
            await self.csms.count_call(self.id, action)
        if self._boot_accepted:
            # Only now: the BootNotification.conf has been sent.
            self.csms.start_script(self)

    # -- handlers ---------------------------------------------------------------

    @on(Action.boot_notification)
    def on_boot_notification(self, **_: Any) -> call_result.BootNotification:
        status = self.csms.boot_status()
        self._boot_accepted = status == RegistrationStatus.accepted
        return call_result.BootNotification(
            current_time=utc_now(),
            interval=self.csms.args.heartbeat_interval,
            status=status,
        )

    @on(Action.heartbeat)
    def on_heartbeat(self, **_: Any) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=utc_now())

    @on(Action.status_notification)
    def on_status_notification(self, **_: Any) -> call_result.StatusNotification:
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_tag: str, **_: Any) -> call_result.Authorize:
        return call_result.Authorize(id_tag_info=id_tag_info(id_tag))

    @on(Action.start_transaction)
    def on_start_transaction(self, id_tag: str, **_: Any) -> call_result.StartTransaction:
        return call_result.StartTransaction(
            transaction_id=next(self.csms.transaction_ids),
            id_tag_info=id_tag_info(id_tag),
        )

    @on(Action.stop_transaction)
    def on_stop_transaction(
        self, id_tag: str | None = None, **_: Any
    ) -> call_result.StopTransaction:
        info = id_tag_info(id_tag) if id_tag is not None else None
        return call_result.StopTransaction(id_tag_info=info)

    @on(Action.meter_values)
    def on_meter_values(self, **_: Any) -> call_result.MeterValues:
        return call_result.MeterValues()

    @on(Action.data_transfer)
    def on_data_transfer(self, **_: Any) -> call_result.DataTransfer:
        return call_result.DataTransfer(status=DataTransferStatus.accepted)

    @on(Action.diagnostics_status_notification)
    def on_diagnostics_status_notification(
        self, **_: Any
    ) -> call_result.DiagnosticsStatusNotification:
        return call_result.DiagnosticsStatusNotification()

    @on(Action.firmware_status_notification)
    def on_firmware_status_notification(self, **_: Any) -> call_result.FirmwareStatusNotification:
        return call_result.FirmwareStatusNotification()

    @on(Action.sign_certificate)
    def on_sign_certificate(self, **_: Any) -> call_result.SignCertificate:
        return call_result.SignCertificate(status=GenericStatus.accepted)

    @on(Action.log_status_notification)
    def on_log_status_notification(self, **_: Any) -> call_result.LogStatusNotification:
        return call_result.LogStatusNotification()

    @on(Action.signed_firmware_status_notification)
    def on_signed_firmware_status_notification(
        self, **_: Any
    ) -> call_result.SignedFirmwareStatusNotification:
        return call_result.SignedFirmwareStatusNotification()

    @on(Action.security_event_notification)
    def on_security_event_notification(self, **_: Any) -> call_result.SecurityEventNotification:
        return call_result.SecurityEventNotification()


class Script:
    """Runs the scripted steps, one after the other, against one charge point id.

    Each step uses the charge point's current connection, so a script may span
    a reconnect (e.g. ``{"wait_for": "BootNotification"}`` after a Reset, or any
    step after ``{"close": true}``, which hangs up on the charge point).
    """

    def __init__(self, csms: Csms, cp_id: str, steps: list[dict[str, Any]]) -> None:
        self.csms = csms
        self.cp_id = cp_id
        self.steps = steps

    @property
    def cp(self) -> CsmsChargePoint:
        return self.csms.charge_points[self.cp_id]

    async def run(self) -> None:
        rec = self.csms.rec
        for index, step in enumerate(self.steps):
            try:
                if "call" in step:
                    await self.do_call(index, step)
                elif "raw" in step or "raw_text" in step:
                    await self.do_raw(index, step)
                elif "sleep" in step:
                    await asyncio.sleep(float(step["sleep"]))
                    rec.event("slept", step=index, seconds=step["sleep"])
                elif "wait_for" in step:
                    await self.do_wait_for(index, step)
                elif "close" in step:
                    # Hang up on the charge point (a restart, a load balancer): it reconnects.
                    await self.cp.connection.close()
                    rec.event("closed", step=index)
                else:
                    rec.event(
                        "error",
                        step=index,
                        call=None,
                        error_code="BadStep",
                        description=f"unknown step {step!r}",
                    )
            except Exception as exc:  # a broken step must not kill the CSMS
                LOG.exception("script step %d failed", index)
                rec.event(
                    "error",
                    step=index,
                    call=step.get("call"),
                    error_code=type(exc).__name__,
                    description=str(exc),
                )
        rec.event("script_done")

    async def do_call(self, index: int, step: dict[str, Any]) -> None:
        rec = self.csms.rec
        action: str = step["call"]
        payload: dict[str, Any] = step.get("payload") or {}
        snake = camel_to_snake_case(payload)
        if _snake_to_camel_case(snake) != payload:
            LOG.warning("step %d: payload keys do not survive camel/snake conversion", index)
        request = getattr(call, action)(**snake)

        cp = self.cp
        unique_id = str(cp._unique_id_generator())
        cp.pending_call_id = unique_id
        cp._response_timeout = float(step.get("timeout", 30))
        call_task = asyncio.ensure_future(
            cp.call(
                request,
                suppress=False,
                unique_id=unique_id,
                skip_schema_validation=bool(step.get("skip_schema_validation", False)),
            )
        )
        closed_task = asyncio.ensure_future(cp.connection.wait_closed())
        try:
            await asyncio.wait({call_task, closed_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed_task.cancel()
            cp.pending_call_id = None
            if not call_task.done():
                call_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await call_task
        if call_task.cancelled():
            rec.event(
                "error",
                step=index,
                call=action,
                error_code="ConnectionClosed",
                description="connection closed before the reply",
            )
            return
        raw_reply = cp.raw_replies.pop(unique_id, None)
        try:
            result = call_task.result()
        except OCPPError as exc:
            if raw_reply is not None and raw_reply[0] == CALLERROR:
                code = raw_reply[2] if len(raw_reply) > 2 else None
                description = raw_reply[3] if len(raw_reply) > 3 else None
                details = raw_reply[4] if len(raw_reply) > 4 else None
            else:  # e.g. the CALLRESULT failed schema validation
                code, description, details = exc.code, exc.description, exc.details
            rec.event(
                "error",
                step=index,
                call=action,
                error_code=code,
                description=description,
                details=details,
            )
            return
        except TimeoutError as exc:
            rec.event("error", step=index, call=action, error_code="Timeout", description=str(exc))
            return
        if raw_reply is not None and raw_reply[0] == CALLRESULT and len(raw_reply) > 2:
            result_payload = raw_reply[2]
        else:
            result_payload = _snake_to_camel_case(remove_nones(serialize_as_dict(result)))
        rec.event("result", step=index, call=action, payload=result_payload)

    async def do_raw(self, index: int, step: dict[str, Any]) -> None:
        rec = self.csms.rec
        if "raw" in step:
            text = json.dumps(step["raw"])
            frame: Any = step["raw"]
        else:
            text = step["raw_text"]
            try:
                frame = json.loads(text)
            except json.JSONDecodeError:
                frame = None
        if "reply_id" in step:
            reply_id = step["reply_id"]
        elif isinstance(frame, list) and len(frame) >= 2 and isinstance(frame[1], str):
            reply_id = frame[1]
        else:
            reply_id = None  # accept any reply that is not for one of our calls

        cp = self.cp
        waiter: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        cp.raw_waiters[reply_id] = waiter
        try:
            await cp._send(text)
            reply = await asyncio.wait_for(waiter, float(step.get("timeout", 5)))
        except TimeoutError:
            rec.event("raw_no_reply", step=index)
        else:
            rec.event("raw_reply", step=index, frame=reply)
        finally:
            if cp.raw_waiters.get(reply_id) is waiter:
                del cp.raw_waiters[reply_id]

    async def do_wait_for(self, index: int, step: dict[str, Any]) -> None:
        rec = self.csms.rec
        action: str = step["wait_for"]
        count = int(step.get("count", 1))
        timeout = float(step.get("timeout", 30))
        cond = self.csms.calls_changed
        key = (self.cp_id, action)
        async with cond:
            target = self.csms.call_counts.get(key, 0) + count
            try:
                await asyncio.wait_for(
                    cond.wait_for(lambda: self.csms.call_counts.get(key, 0) >= target), timeout
                )
            except TimeoutError:
                got = self.csms.call_counts.get(key, 0) - (target - count)
                rec.event("wait_timeout", step=index, action=action, count=count, received=got)
                return
        rec.event("waited", step=index, action=action, count=count)


def cp_id_from_path(path: str) -> str:
    route = urllib.parse.urlsplit(path).path
    segments = [s for s in route.split("/") if s]
    return urllib.parse.unquote(segments[-1]) if segments else ""


def make_process_request(password: str | bytes):
    """HTTP Basic auth ``<chargePointId>:<password>``, HTTP 401 otherwise; a `bytes` password
    is compared byte for byte (it need not be text)."""

    def unauthorized(connection: ServerConnection, why: str) -> Response:
        LOG.warning("rejecting %s: %s", connection.request.path if connection.request else "?", why)
        response = connection.respond(HTTPStatus.UNAUTHORIZED, why + "\n")
        response.headers["WWW-Authenticate"] = build_www_authenticate_basic("OCPP")
        return response

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        header = request.headers.get("Authorization")
        if header is None:
            return unauthorized(connection, "Missing credentials")
        if isinstance(password, bytes):
            scheme, _, token = header.partition(" ")
            try:
                decoded = base64.b64decode(token, validate=True)
            except (binascii.Error, ValueError):
                return unauthorized(connection, "Unsupported credentials")
            user, colon, given_bytes = decoded.partition(b":")
            expected_user = cp_id_from_path(request.path).encode()
            if scheme.lower() != "basic" or not colon or user != expected_user:
                return unauthorized(connection, "Invalid credentials")
            if given_bytes != password:
                return unauthorized(connection, "Invalid credentials")
            return None
        try:
            username, given = parse_authorization_basic(header)
        except InvalidHeader:
            return unauthorized(connection, "Unsupported credentials")
        if username != cp_id_from_path(request.path) or given != password:
            return unauthorized(connection, "Invalid credentials")
        return None

    return process_request


def select_subprotocol(connection: ServerConnection, offered: list[str]) -> str | None:
    """Pick ocpp1.6 if offered; otherwise accept without one (the handler closes)."""
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


async def handle_connection(csms: Csms, connection: ServerConnection) -> None:
    request = connection.request
    assert request is not None
    headers: Headers = request.headers
    cp_id = cp_id_from_path(request.path)
    peer = connection.transport.get_extra_info("peercert") if connection.transport else None
    csms.rec.event(
        "connected",
        cp_id=cp_id,
        subprotocol=connection.subprotocol,
        authorization=headers.get("Authorization"),
        path=request.path,
        # The subject of the client certificate the charge point presented (mutual TLS).
        client_subject=dict(item for rdn in peer["subject"] for item in rdn) if peer else None,
    )
    try:
        if connection.subprotocol != SUBPROTOCOL:
            LOG.warning(
                "%s: no %s subprotocol (client offered %r), closing",
                cp_id,
                SUBPROTOCOL,
                headers.get("Sec-WebSocket-Protocol"),
            )
            await connection.close(code=1002, reason="subprotocol ocpp1.6 required")
            return
        cp = CsmsChargePoint(cp_id, connection, csms)
        csms.charge_points[cp_id] = cp
        with contextlib.suppress(ConnectionClosed):
            await cp.start()
    finally:
        csms.rec.event("disconnected", cp_id=cp_id)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    parser.add_argument("--heartbeat-interval", type=int, default=2)
    parser.add_argument(
        "--boot-status", choices=["Accepted", "Pending", "Rejected"], default="Accepted"
    )
    parser.add_argument(
        "--boot-accept-after",
        type=int,
        default=0,
        help="answer the first N BootNotifications with --boot-status, then Accepted",
    )
    parser.add_argument("--auth-password", default=None)
    parser.add_argument(
        "--auth-key-hex", default=None, help="Basic auth password: these hex digits' bytes"
    )
    parser.add_argument("--tls-cert", default=None, help="PEM chain: serve wss://")
    parser.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    parser.add_argument(
        "--tls-client-ca", default=None, help="require client certificates issued by this CA"
    )
    parser.add_argument("--script", default=None, help="JSON file with a list of steps")
    parser.add_argument("--record", default=None, help="also append events to this file")
    parser.add_argument("--ping-interval", type=float, default=20, help="0 disables pings")
    parser.add_argument("--verbose", "-v", action="store_true", help="log frames to stderr")
    return parser.parse_args(argv)


def server_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """TLS 1.2+ with --tls-cert/--tls-key; client certificates required with --tls-client-ca."""
    if args.tls_cert is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(args.tls_cert, args.tls_key)
    if args.tls_client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(args.tls_client_ca)
    return context


async def amain(args: argparse.Namespace) -> None:
    recorder = Recorder(args.record)
    csms = Csms(args, recorder)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    password: str | bytes | None = args.auth_password
    if args.auth_key_hex is not None:
        password = bytes.fromhex(args.auth_key_hex)
    server: Server
    try:
        async with serve(
            lambda connection: handle_connection(csms, connection),
            args.host,
            args.port,
            subprotocols=[SUBPROTOCOL],
            select_subprotocol=select_subprotocol,
            process_request=make_process_request(password) if password else None,
            ssl=server_context(args),
            ping_interval=args.ping_interval or None,
            close_timeout=2,
        ) as server:
            port = server.sockets[0].getsockname()[1]
            recorder.line(f"LISTENING {port}", record=False)  # stdout only
            await stop.wait()
            if csms.script_task is not None:
                csms.script_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await csms.script_task
    finally:
        recorder.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    asyncio.run(amain(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
