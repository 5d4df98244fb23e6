"""Who may charge: the local authorization list, the authorization cache, the central system,
and the offline rules (OCPP 1.6 section 3.5; keys LocalPreAuthorize, LocalAuthorizeOffline,
AllowOfflineTxForUnknownId, AuthorizationCacheEnabled, LocalAuthListEnabled).

1. What the charger knows itself: the local list entry if there is one (3.5.3: it has priority
   over the cache), else the cache entry. Either counts as Expired past its expiryDate.
2. Known and Accepted, with LocalPreAuthorize: start at once, no Authorize.req (3.5).
3. Online: ask the central system; its answer decides (a not-valid local entry is asked about
   too: 3.5.1 says so for the cache, and the list may be stale the same way).
4. Offline (or no answer): a known not-valid tag is rejected (3.5.4 MUST); a known valid one is
   accepted with LocalAuthorizeOffline; anything else only with AllowOfflineTxForUnknownId.

Every key is read at each decision, so a ChangeConfiguration applies to the next tag.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
from ocpp.v16 import call
from ocpp.v16.enums import AuthorizationStatus

from dcocpp.ocpp.authcache import cache_enabled
from dcocpp.ocpp.configuration import ConfigurationStore
from dcocpp.ocpp.errors import CallError, ConnectionLost, InvalidPayload
from dcocpp.ocpp.locallist import list_enabled
from dcocpp.ocpp.session import ChargePointSession, ResponseTimeout

log = logging.getLogger(__name__)


@attrs.frozen
class Decision:
    status: AuthorizationStatus
    parent_id_tag: str | None = None
    # For the log: "local list", "cache", "central system", "... (offline)", "offline rule".
    source: str = "central system"

    @property
    def accepted(self) -> bool:
        return self.status == AuthorizationStatus.accepted


def _decision(info: dict[str, Any], source: str) -> Decision:
    return Decision(AuthorizationStatus(info["status"]), info.get("parent_id_tag"), source)


def _flag(store: ConfigurationStore, key: str) -> bool:
    # get(), not get_bool(): an optional key the key file leaves out reads as false.
    return store.get(key) == "true"


class Authorizer:
    def __init__(self, session: ChargePointSession):
        self._session = session

    def known(self, id_tag: str) -> Decision | None:
        """What the local list, else the cache, says about `id_tag` now; None if neither
        knows it (or neither is enabled)."""
        session = self._session
        if list_enabled(session.store):
            listed = session.local_list.lookup(id_tag)
            if listed is not None:
                return _decision(listed, "local list")
        if cache_enabled(session.store):
            cached = session.auth_cache.lookup(id_tag)
            if cached is not None:
                return _decision(cached, "cache")
        return None

    async def authorize(self, id_tag: str) -> Decision:
        session = self._session
        store = session.store
        known = self.known(id_tag)
        if known is not None and known.accepted and _flag(store, "LocalPreAuthorize"):
            return known
        if session.registration.accepted:
            try:
                result = await session.call(call.Authorize(id_tag=id_tag))
            except (ConnectionLost, ResponseTimeout, CallError, InvalidPayload) as exc:
                log.warning("Authorize for %s failed (%s): deciding offline", id_tag, exc)
            else:
                await session.remember_authorization(id_tag, result.id_tag_info)
                return _decision(result.id_tag_info, "central system")
        if known is not None and not known.accepted:
            return attrs.evolve(known, source=f"{known.source} (offline)")
        if known is not None and _flag(store, "LocalAuthorizeOffline"):
            return attrs.evolve(known, source=f"{known.source} (offline)")
        if _flag(store, "AllowOfflineTxForUnknownId"):
            return Decision(AuthorizationStatus.accepted, None, "offline rule")
        return Decision(AuthorizationStatus.invalid, None, "offline rule")
