"""The authorization cache: the latest idTagInfo the central system returned for each tag, kept
for LocalPreAuthorize and offline authorization (OCPP 1.6 section 3.5.1).

Persisted write-through in the station database (`CacheStore`, which `asyncdb.AsyncDatabase`
satisfies: its writes run off the event loop, in the order asked), so that a power cut or a
soft reset does not forget who may charge offline. The OCPP layer knows no SQL: the owner
passes the store and the exception type(s) it raises, and they are translated to
`AuthStoreError` here, at the boundary.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import trio
from ocpp.v16.enums import AuthorizationStatus

from dcocpp import idtags
from dcocpp.clock import parse_ocpp_time
from dcocpp.ocpp.configuration import ConfigurationStore
from dcocpp.ocpp.errors import OcppError

log = logging.getLogger(__name__)

# idTagInfo as the OCPP layer passes it around: snake_case keys status, expiry_date,
# parent_id_tag (the `ocpp` package's naming of the payload).
IdTagInfo = dict[str, Any]
Clock = Callable[[], datetime]
StoreErrors = tuple[type[Exception], ...]

# OCPP 1.6 has no key for the cache size; this bounds the database (one row per tag ever seen).
DEFAULT_CACHE_CAPACITY = 10_000


class AuthStoreError(OcppError):
    """The authorization cache or local list could not be read or written."""


class CacheStore(Protocol):
    """What the cache needs from persistent storage (`asyncdb.AsyncDatabase` provides it)."""

    async def auth_cache(self) -> dict[str, dict[str, Any]]:
        """Every cached tag, oldest update first."""
        ...

    async def put_auth_cache(self, id_tag: str, info: Mapping[str, Any]) -> None: ...

    async def delete_auth_cache(self, id_tags: Iterable[str] | None = None) -> None:
        """Forget the given tags, or every tag when None."""
        ...


def utc_now() -> datetime:
    return datetime.now(UTC)


def parse_expiry(value: str | None) -> datetime | None:
    """An OCPP dateTime as an aware UTC datetime; None when absent or unreadable, or outside
    what UTC can express (9999-12-31T23:00:00-02:00 is year 10000)."""
    if not value:
        return None
    try:
        return parse_ocpp_time(value)
    except ValueError:
        return None


def effective(info: Mapping[str, Any], now: datetime) -> IdTagInfo:
    """`info` as it stands at `now`: past its expiryDate any entry counts as Expired (3.5.1:
    "when the validity of a Cache entry expires, it SHALL be changed to expired"; 3.5.4:
    identifiers expired by the passage of time MUST be rejected)."""
    expiry = parse_expiry(info.get("expiry_date"))
    if expiry is not None and expiry <= now:
        return {**info, "status": AuthorizationStatus.expired.value}
    return dict(info)


def is_valid(info: Mapping[str, Any]) -> bool:
    return bool(info["status"] == AuthorizationStatus.accepted)


def cache_enabled(store: ConfigurationStore) -> bool:
    """AuthorizationCacheEnabled, read at every use so that ChangeConfiguration applies at
    once; a charger whose key file leaves the key out has no cache."""
    return store.get("AuthorizationCacheEnabled") == "true"


class AuthorizationCache:
    """The cache in memory, written through to `store` (in memory only when None); `load()`
    reads what the store holds, before the cache is used.

    Updates never raise: a cache that cannot be written is a degraded cache, not a reason to
    lose the answer that filled it (the failure is logged). `clear()` raises `AuthStoreError`,
    because ClearCache must not be acknowledged unless it is durable. Changes are made one at
    a time, each with its write, so memory and store change in the same order."""

    def __init__(
        self,
        store: CacheStore | None = None,
        *,
        clock: Clock = utc_now,
        store_errors: StoreErrors = (),
        capacity: int = DEFAULT_CACHE_CAPACITY,
    ) -> None:
        self._store: CacheStore = store if store is not None else _NoStore()
        self._errors = store_errors
        self._clock = clock  # the station's wall clock: expiry dates are wall-clock times
        self._capacity = max(1, capacity)
        # By folded idTag (`idtags.key`); insertion order = oldest update first.
        self._entries: dict[str, IdTagInfo] = {}
        self._changing = trio.Lock()

    async def load(self) -> None:
        """Take what the store holds (at boot, before the cache is used)."""
        try:
            stored = await self._store.auth_cache()
        except self._errors as exc:
            # An unreadable cache starts empty: the charger still works, online.
            log.error("authorization cache not loaded, starting empty: %s", exc)
            return
        self._entries = {idtags.key(t): info for t, info in stored.items()}

    async def update(self, id_tag: str, id_tag_info: Mapping[str, Any]) -> None:
        """Remember the latest idTagInfo the central system gave for a tag (3.5.1)."""
        info = dict(id_tag_info)
        tag = idtags.key(id_tag)
        async with self._changing:
            evicted = self._make_room(tag)
            self._entries.pop(tag, None)  # re-inserted last: the newest update
            self._entries[tag] = info
            try:
                if evicted:
                    await self._store.delete_auth_cache(evicted)
                await self._store.put_auth_cache(tag, info)
            except self._errors as exc:
                log.error("authorization cache entry for %s not stored: %s", id_tag, exc)

    def lookup(self, id_tag: str) -> IdTagInfo | None:
        """The cached idTagInfo as it stands now (an entry past its expiry is Expired)."""
        info = self._entries.get(idtags.key(id_tag))
        return None if info is None else effective(info, self._clock())

    async def forget(self, id_tags: Iterable[str]) -> None:
        """Drop entries (tags that entered the local list, 3.5.3); a failed write is logged."""
        keys = [idtags.key(tag) for tag in id_tags]
        async with self._changing:
            gone = [tag for tag in keys if self._entries.pop(tag, None) is not None]
            if not gone:
                return
            try:
                await self._store.delete_auth_cache(gone)
            except self._errors as exc:
                log.error("authorization cache entries not deleted: %s", exc)

    async def clear(self) -> None:
        """Empty the cache (ClearCache); raises `AuthStoreError` when that is not durable,
        and then nothing changed."""
        async with self._changing:
            try:
                await self._store.delete_auth_cache(None)
            except self._errors as exc:
                raise AuthStoreError(f"authorization cache not cleared: {exc}") from exc
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, id_tag: object) -> bool:
        return isinstance(id_tag, str) and idtags.key(id_tag) in self._entries

    def _make_room(self, id_tag: str) -> list[str]:
        """Entries (folded tags) to evict before `id_tag` (folded) is added: first the
        not-valid ones, then the oldest valid ones (3.5.1)."""
        excess = len(self._entries) + (id_tag not in self._entries) - self._capacity
        if excess <= 0:
            return []
        now = self._clock()
        by_preference = sorted(
            (tag for tag in self._entries if tag != id_tag),
            key=lambda tag: is_valid(effective(self._entries[tag], now)),  # stable: oldest first
        )
        evicted = by_preference[:excess]
        for tag in evicted:
            del self._entries[tag]
        return evicted


class _NoStore:
    """The store of a cache that lives in memory only."""

    async def auth_cache(self) -> dict[str, dict[str, Any]]:
        return {}

    async def put_auth_cache(self, id_tag: str, info: Mapping[str, Any]) -> None:
        pass

    async def delete_auth_cache(self, id_tags: Iterable[str] | None = None) -> None:
        pass
