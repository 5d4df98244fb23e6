"""OCPP-J remote procedure calls over one trio-websocket connection, in either role.

`RpcConnection.run()` is the connection's reader: it owns a nursery in which every incoming CALL
is handled as its own task, so a handler that itself calls the peer (or a slow one) never blocks
the reader, and our own outstanding CALL never blocks incoming ones. `call()` sends one CALL at a
time, as OCPP-J requires; how long to wait for the answer is the caller's cancel scope.

Handlers are methods decorated with the `ocpp` package's `@on(Action)` (and optionally
`@after(Action)`, run once the CALLRESULT has been sent); they receive snake_case keyword
arguments and return a `ocpp.v16.call_result` dataclass, exactly as with the package's own
asyncio ChargePoint.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import secrets
from collections.abc import Callable
from typing import Any

import attrs
import trio
from ocpp import exceptions as ocpp_exceptions
from ocpp.messages import Call, CallError, CallResult, MessageType
from ocpp.routing import create_route_map
from ocpp.v16 import call_result as v16_call_result
from ocpp.v16.enums import Action
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection

from dcocpp.jsontypes import valid_text
from dcocpp.ocpp import wire
from dcocpp.ocpp.errors import CallError as CallErrorException
from dcocpp.ocpp.errors import ConnectionLost, InvalidPayload, OcppError, UnsendablePayload
from dcocpp.ocpp.messagelog import MessageLog
from dcocpp.ocpp.traffic import RECEIVED, SENT, LinkTraffic

log = logging.getLogger(__name__)

_KNOWN_ACTIONS = frozenset(a.value for a in Action)
# The package's exception codes that OCPP 1.6 spells differently (errata 5.1/5.2).
_OCPP16_CODES = {
    "FormatViolation": "FormationViolation",
    "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
}


@attrs.define
class _Pending:
    unique_id: str
    action: str
    done: trio.Event = attrs.field(factory=trio.Event)
    sent_at: float = 0.0  # trio time, for the round trip
    # The answer; a FrameError when the answer came but could not be read.
    response: CallResult | CallError | wire.FrameError | None = None


class RpcConnection:
    """One OCPP-J session endpoint on an open WebSocket.

    `run()` reads until the WebSocket closes, then returns; handler tasks still running are
    cancelled with it. `call()` raises `ConnectionLost` when the socket closes under it,
    `CallError` when the peer answers with a CALLERROR, and `InvalidPayload` when either side's
    payload fails the schema (`UnsendablePayload` when it is ours: nothing was sent; or the
    answer is not even a well-formed frame). Once `run()` has seen the WebSocket close,
    `close_reason` says how and `closed_here` whether this side closed it.
    """

    def __init__(
        self,
        ws: WebSocketConnection,
        handlers: object,
        *,
        message_log: MessageLog,
        call_results: Any = v16_call_result,
        validate: bool = True,
        max_concurrent_handlers: int = 8,
        answers: Callable[[str], bool] | None = None,
        traffic: LinkTraffic | None = None,
    ):
        self._ws = ws
        # Counts what goes over the link (the console, /metrics); a throwaway one if none.
        self._traffic = traffic if traffic is not None else LinkTraffic()
        self._routes = create_route_map(handlers)
        self._log = message_log
        self._call_results = call_results
        self._validate = validate
        # Whether a CALL of this action is answered now; one that is not is dropped (a charge
        # point whose registration was Rejected does not respond, OCPP 1.6 4.2).
        self._answers = answers
        self._call_lock = trio.Lock()
        self._pending: _Pending | None = None
        self._closed = False
        # How the WebSocket closed under `run()` (None: it did not, e.g. `run()` was
        # cancelled), and whether this side closed it (`closed_here`).
        self.close_reason: CloseReason | None = None
        self.closed_here = False
        self._ended = trio.Event()
        self._handler_slots = trio.Semaphore(max_concurrent_handlers)
        self._max_handlers = max_concurrent_handlers
        self._busy_said = False  # a refusal for lack of slots was logged (see _refuse_busy)
        self._lenient_said: set[tuple[str, str]] = set()  # see _valid_answer
        # Unique ids need only be unique per connection: a random prefix and a counter are
        # cheaper than uuid4 and still easy to follow in the message log.
        self._id_prefix = secrets.token_hex(4)
        self._counter = itertools.count(1)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def websocket(self) -> WebSocketConnection:
        return self._ws

    # --- reader ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read frames until the connection closes; handle CALLs concurrently."""
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    try:
                        text = await self._ws.get_message()
                    except ConnectionClosed as exc:
                        self.close_reason = exc.reason
                        # trio-websocket discards what is left to read when this side
                        # closes (aclose, or a message above its max_message_size: 1009),
                        # reported from its closed receive channel; a close of the peer's
                        # lets the channel run out (EndOfChannel).
                        self.closed_here = isinstance(exc.__context__, trio.ClosedResourceError)
                        side = "here" if self.closed_here else "by the peer"
                        self._log.note(f"connection closed {side}: {exc.reason}")
                        break
                    self._log.received(text)
                    try:
                        await self._dispatch_frame(text, nursery)
                    except ConnectionLost as exc:
                        # An answer the reader sends itself (to a malformed CALL, or one
                        # beyond the slots) met a closed connection; the next read ends it.
                        log.info("connection closed before an answer could be sent (%s)", exc)
                nursery.cancel_scope.cancel()
        finally:
            self._closed = True
            self._ended.set()
            if self._pending is not None:
                self._pending.done.set()

    async def wait_ended(self) -> None:
        """Until `run()` has returned (or ended otherwise)."""
        await self._ended.wait()

    async def _dispatch_frame(self, text: str | bytes, nursery: trio.Nursery) -> None:
        try:
            frame = wire.decode_frame(text)
        except wire.FrameError as exc:
            log.warning("malformed OCPP-J frame from the peer: %s", exc.description)
            pending = self._pending
            if exc.reply and exc.unique_id is not None:
                await self._send_error(exc.unique_id, exc)
            elif exc.answer and pending is not None and exc.unique_id == pending.unique_id:
                pending.response = exc  # our CALL fails now, not at its response timeout
                pending.done.set()
            else:
                self._log.note(f"dropped malformed frame: {exc.description}")
            return
        if isinstance(frame, Call):
            if self._answers is not None and not self._answers(frame.action):
                self._log.note(f"not answered: {frame.action} {frame.unique_id}")
                return
            # The reader never waits for a slot: the answers to our own CALLs come through it,
            # and a handler's follow-up (TriggerMessage's message) waits for one of them. OCPP-J
            # allows one CALL at a time from each side; beyond the slots, a CALL is refused now.
            try:
                self._handler_slots.acquire_nowait()
            except trio.WouldBlock:
                await self._refuse_busy(frame)
                return
            self._busy_said = False
            self._traffic.count(frame.action, RECEIVED, "CALL")
            nursery.start_soon(self._handle_call, frame)
            return
        pending = self._pending
        if pending is None or frame.unique_id != pending.unique_id:
            # Typically the answer to a CALL whose caller already gave up (timed out).
            log.warning("ignoring a response to unknown or expired CALL %r", frame.unique_id)
            self._log.note(f"dropped response to unknown CALL {frame.unique_id}")
            return
        pending.response = frame
        kind = "CALLERROR" if isinstance(frame, CallError) else "CALLRESULT"
        self._traffic.count(pending.action, RECEIVED, kind)
        self._traffic.round_trips.observe(trio.current_time() - pending.sent_at)
        pending.done.set()

    # --- incoming CALLs ----------------------------------------------------------------------

    async def _refuse_busy(self, frame: Call) -> None:
        busy = self._max_handlers
        # Said once per flood, not once per CALL of it.
        log.log(
            logging.DEBUG if self._busy_said else logging.WARNING,
            "the peer sends CALLs while %d are in progress: %s refused (GenericError)",
            busy,
            frame.action,
        )
        self._busy_said = True
        await self._send_error(
            frame.unique_id,
            CallErrorException(
                "GenericError",
                f"{busy} CALLs are in progress; OCPP-J allows one at a time from each side",
            ),
            frame.action,
        )

    async def _handle_call(self, msg: Call) -> None:
        try:
            handlers = None
            try:
                handlers = self._routes.get(msg.action)
                payload = await self._run_handler(msg, handlers)
            except CallErrorException as exc:
                await self._send_error(msg.unique_id, exc, msg.action)
                return
            except ocpp_exceptions.OCPPError as exc:
                code = _OCPP16_CODES.get(exc.code, exc.code)
                # The package's details may hold non-JSON objects; the description says it all.
                error = CallErrorException(code, exc.description)
                await self._send_error(msg.unique_id, error, msg.action)
                return
            except Exception:
                # A bug in one handler must not take the session down: answer, log, go on.
                log.exception("handler for %s failed", msg.action)
                await self._send_error(
                    msg.unique_id,
                    CallErrorException("InternalError", f"{msg.action} could not be processed"),
                    msg.action,
                )
                return
            self._traffic.count(msg.action, SENT, "CALLRESULT")
            await self._send(wire.encode_result(msg.unique_id, payload))
            if handlers is not None and "_after_action" in handlers:
                await self._run_after(msg, handlers["_after_action"])
        except ConnectionLost:
            log.info("connection closed before the answer to %s could be sent", msg.action)
        finally:
            self._handler_slots.release()

    async def _run_handler(self, msg: Call, handlers: dict[str, Any] | None) -> dict[str, Any]:
        if handlers is None or "_on_action" not in handlers:
            if msg.action in _KNOWN_ACTIONS:
                raise CallErrorException("NotImplemented", f"{msg.action} is not implemented")
            raise CallErrorException("NotSupported", f"{msg.action} is not an OCPP 1.6 action")
        skip_validation = not self._validate or handlers.get("_skip_schema_validation", False)
        payload = msg.payload
        if not skip_validation:
            payload = wire.validate(MessageType.Call, msg.action, payload)
        result = handlers["_on_action"](**wire.to_snake(payload))
        if inspect.isawaitable(result):
            result = await result
        out = wire.to_camel(result)
        if not skip_validation:
            try:
                wire.validate(MessageType.CallResult, msg.action, out)
            except CallErrorException as exc:
                # Never put an invalid payload on the wire; this is our bug, say so.
                log.error("our %s response fails the schema: %s", msg.action, exc)
                raise CallErrorException(
                    "InternalError", f"{msg.action} response could not be built"
                ) from exc
        return out

    async def _run_after(self, msg: Call, after: Any) -> None:
        try:
            result = after(**wire.to_snake(msg.payload))
            if inspect.isawaitable(result):
                await result
        except OcppError as exc:
            log.warning("follow-up of %s failed: %s", msg.action, exc)
        except Exception:
            log.exception("follow-up of %s failed", msg.action)

    # --- outgoing CALLs ----------------------------------------------------------------------

    async def call(self, payload: Any) -> Any:
        """Send a v16 `call` dataclass and return the matching `call_result` dataclass.

        One CALL is outstanding at a time; callers queue on a FIFO lock. Wrap it in a cancel
        scope for the response timeout; a late answer to a cancelled CALL is dropped."""
        action = wire.action_of(payload)
        body = wire.to_camel(payload)
        result = await self.call_raw(action, body)
        cls = getattr(self._call_results, action)
        return cls(**wire.to_snake(result))

    async def call_raw(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        """`call()` on camelCase dicts, for peers that do not use the v16 dataclasses."""
        if self._validate:
            try:
                wire.validate(MessageType.Call, action, body)
            except CallErrorException as exc:
                raise UnsendablePayload(action, exc) from None
        if not valid_text(body):  # the WebSocket could not even encode it
            raise UnsendablePayload(
                action,
                CallErrorException("PropertyConstraintViolation", "text that is not Unicode"),
            )
        # Uncontended, take the lock without a scheduler pass (the send below checkpoints).
        if not self._call_lock.locked():
            self._call_lock.acquire_nowait()
        else:
            await self._call_lock.acquire()
        try:
            if self._closed:
                raise ConnectionLost(f"connection closed, {action} not sent")
            pending = _Pending(f"{self._id_prefix}-{next(self._counter)}", action)
            self._pending = pending
            try:
                pending.sent_at = trio.current_time()
                self._traffic.count(action, SENT, "CALL")
                await self._send(wire.encode_call(pending.unique_id, action, body))
                await pending.done.wait()
            finally:
                self._pending = None
        finally:
            self._call_lock.release()
        response = pending.response
        if response is None:
            raise ConnectionLost(f"connection closed while waiting for the answer to {action}")
        if isinstance(response, wire.FrameError):
            raise InvalidPayload(action, response)
        if isinstance(response, CallError):
            raise CallErrorException(
                response.error_code, response.error_description, response.error_details
            )
        if self._validate:
            return self._valid_answer(action, response.payload)
        return response.payload

    def _valid_answer(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The peer's CALLRESULT payload, held to the schema. One with properties the schema
        does not know is used without them when the rest is valid: OCPP 1.6 forbids them, but
        refusing such an answer would make its message a failure (a StartTransaction sent
        again, its transactionId lost). Said at WARNING once per connection, action and
        properties (a central system that always adds one says it with every answer)."""
        try:
            return wire.validate(MessageType.CallResult, action, payload)
        except CallErrorException as exc:
            error = exc
        known, unknown = wire.without_unknown_properties(MessageType.CallResult, action, payload)
        if not unknown:
            raise InvalidPayload(action, error)
        listed = ", ".join(unknown)
        try:
            result = wire.validate(MessageType.CallResult, action, known)
        except CallErrorException as exc:
            raise InvalidPayload(
                action,
                CallErrorException(
                    exc.code,
                    f"{exc.description} (besides properties OCPP 1.6 does not know: {listed})",
                ),
            ) from None
        said = (action, listed)
        log.log(
            logging.DEBUG if said in self._lenient_said else logging.WARNING,
            "%s.conf has properties OCPP 1.6 does not know, used without them: %s",
            action,
            listed,
        )
        self._lenient_said.add(said)
        return result

    # --- sending -----------------------------------------------------------------------------

    async def _send_error(
        self, unique_id: str, exc: CallErrorException, action: str | None = None
    ) -> None:
        if action is not None:
            self._traffic.count(action, SENT, "CALLERROR")
        await self._send(wire.encode_error(unique_id, exc.code, exc.description, exc.details))

    async def _send(self, text: str) -> None:
        self._log.sent(text)
        try:
            await self._ws.send_message(text)
        except ConnectionClosed as exc:
            reason = exc.reason
            code = f" (WebSocket close {reason.code} {reason.name})" if reason else ""
            raise ConnectionLost(f"connection closed{code}") from None

    async def aclose(self) -> None:
        """Close the WebSocket (normal closure); `run()` then returns."""
        await self._ws.aclose()
