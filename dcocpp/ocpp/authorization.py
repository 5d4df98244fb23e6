"""Who may charge: the authorization cache, the central system, and the offline rules
(OCPP 1.6 sections 3.5 and 5.x; keys LocalPreAuthorize, LocalAuthorizeOffline,
AllowOfflineTxForUnknownId, AuthorizationCacheEnabled)."""

from __future__ import annotations

import logging
from typing import Any

import attrs
from ocpp.v16 import call
from ocpp.v16.enums import AuthorizationStatus

from dcocpp.ocpp.errors import CallError, ConnectionLost, InvalidPayload
from dcocpp.ocpp.session import ChargePointSession, ResponseTimeout

log = logging.getLogger(__name__)


@attrs.frozen
class Decision:
    status: AuthorizationStatus
    parent_id_tag: str | None = None
    source: str = "central system"  # for the log: "cache", "central system", "offline rule"


def _decision(info: dict[str, Any], source: str) -> Decision:
    return Decision(AuthorizationStatus(info["status"]), info.get("parent_id_tag"), source)


class Authorizer:
    def __init__(self, session: ChargePointSession):
        self._session = session

    async def authorize(self, id_tag: str) -> Decision:
        session = self._session
        store = session.store
        cached = None
        if store.get_bool("AuthorizationCacheEnabled"):
            cached = session.auth_cache.lookup(id_tag)
        if (
            cached is not None
            and store.get_bool("LocalPreAuthorize")
            and cached["status"] == AuthorizationStatus.accepted
        ):
            return _decision(cached, "cache")  # no Authorize.req: it starts at once
        if session.registration.accepted:
            try:
                result = await session.call(call.Authorize(id_tag=id_tag))
            except (ConnectionLost, ResponseTimeout, CallError, InvalidPayload) as exc:
                log.warning("Authorize for %s failed (%s): deciding offline", id_tag, exc)
            else:
                session.remember_authorization(id_tag, result.id_tag_info)
                return _decision(result.id_tag_info, "central system")
        if cached is not None and store.get_bool("LocalAuthorizeOffline"):
            return _decision(cached, "cache (offline)")
        if cached is None and store.get_bool("AllowOfflineTxForUnknownId"):
            return Decision(AuthorizationStatus.accepted, None, "offline rule")
        return Decision(AuthorizationStatus.invalid, None, "offline rule")
