"""What became of a tag presented at the gun's reader (`ConnectorTask.present_id`, behind the
API's `sim authorize`): refused at the reader and why, or the authorization's decision and
what the gun did with it, known once the machine has taken the authorization's result."""

from __future__ import annotations

import attrs
import trio
from ocpp.v16.enums import AuthorizationStatus

from dcocpp import idtags
from dcocpp.connector import events
from dcocpp.connector.machine import Truth, kept_for
from dcocpp.ocpp.authorization import Decision


@attrs.frozen
class TagOutcome:
    """What a gun made of a tag presented at its reader (`ConnectorTask.present_id`)."""

    id_tag: str
    refused: str | None = None  # refused at the reader, and why (then nothing else applies)
    decision: Decision | None = None  # the authorization's (None: not known in time)
    taken: bool = False  # the gun acted on it: a session for it, or the transaction stopped
    detail: str | None = None  # what the gun did with it, or why not, for the operator


@attrs.define
class TagWait:
    """A tag the reader took, until the machine has taken its authorization's result."""

    id_tag: str
    decision: Decision | None = None
    outcome: TagOutcome | None = None
    done: trio.Event = attrs.field(factory=trio.Event)

    async def result(self, wait: float) -> TagOutcome:
        """The outcome, waited for up to `wait` seconds."""
        with trio.move_on_after(wait):
            await self.done.wait()
        if self.outcome is None:
            return TagOutcome(self.id_tag, detail=f"no decision within {wait:g} s")
        return self.outcome


class TagWaits:
    """The tags presented at one gun's reader whose authorization someone awaits."""

    def __init__(self) -> None:
        self._waits: dict[str, TagWait] = {}

    def taken(self, id_tag: str, before: Truth, effects: list[events.Effect]) -> TagWait:
        """The reader took `id_tag`: its outcome now when no authorization is needed, else a
        wait that `settle` ends once the machine has the authorization's result."""
        wait = TagWait(id_tag)
        if any(isinstance(e, events.Authorize) and e.id_tag == id_tag for e in effects):
            self._waits[id_tag] = wait
            return wait
        if before.transaction is not None:  # the transaction's own tag: it stops, no Authorize
            decision = Decision(AuthorizationStatus.accepted, source="the transaction's own tag")
            detail = "stops the transaction"
        else:
            assert before.authorized is not None
            decision = Decision(
                AuthorizationStatus.accepted,
                before.authorized.parent_id_tag,
                source="authorized already",
            )
            detail = None
        wait.outcome = TagOutcome(id_tag, decision=decision, taken=True, detail=detail)
        wait.done.set()
        return wait

    def decided(self, id_tag: str, decision: Decision) -> None:
        """The authorization of `id_tag` decided (before the machine takes the result)."""
        wait = self._waits.get(id_tag)
        if wait is not None:
            wait.decision = decision

    def settle(
        self,
        result: events.AuthorizationResult,
        before: Truth,
        after: Truth,
        effects: list[events.Effect],
    ) -> None:
        """The machine took the authorization result of a tag someone awaits (its truth
        `before` and `after`, its `effects`): what it did."""
        wait = self._waits.pop(result.id_tag, None)
        if wait is None:
            return
        accepted = result.status == AuthorizationStatus.accepted
        taken, detail = False, None
        if before.transaction is not None and result.id_tag == before.stop_candidate:
            taken = any(isinstance(e, events.StopTransaction) for e in effects)
            if taken:
                detail = "stops the transaction"
            elif accepted:
                detail = "but not of the transaction's group (parentIdTag): it goes on"
        elif result.id_tag == before.pending_id:
            if accepted:
                holder = after.transaction or after.authorized
                taken = holder is not None and idtags.same(holder.id_tag, result.id_tag)
                if not taken:
                    detail = (
                        "but the gun is reserved for another tag"
                        if kept_for(after)
                        else "but the gun no longer takes it"
                    )
        else:
            detail = "the gun no longer waited for it"
        wait.outcome = TagOutcome(result.id_tag, decision=wait.decision, taken=taken, detail=detail)
        wait.done.set()
