"""The local authorization list: idTagInfo the central system sends ahead of time, with a
version (OCPP 1.6 sections 3.5.2, 5.10 GetLocalListVersion, 5.15 SendLocalList).

Only SendLocalList changes it (3.5.2: the Charge Point "SHALL NOT modify the contents of the
Authorization List by any other means"), and an update is on disk (`LocalListStore`, which
`asyncdb.AsyncDatabase` provides, off the event loop) before it is answered Accepted,
atomically: after a power cut the list is either the old or the new one, with its version.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import attrs
import trio
from ocpp.v16.enums import UpdateStatus, UpdateType

from dcocpp import idtags
from dcocpp.ocpp.authcache import Clock, IdTagInfo, StoreErrors, effective, parse_expiry, utc_now
from dcocpp.ocpp.configuration import ConfigurationStore
from dcocpp.ocpp.errors import OcppError

log = logging.getLogger(__name__)

PROFILE = "LocalAuthListManagement"
# GetLocalListVersion's answer when the charger has no (enabled) local list (5.10).
NO_LIST_SUPPORT = -1


class LocalListStore(Protocol):
    """What the list needs from persistent storage (`asyncdb.AsyncDatabase` provides it)."""

    async def local_list(self) -> tuple[int, dict[str, dict[str, Any]]]:
        """(listVersion, idTag -> idTagInfo)."""
        ...

    async def replace_local_list(
        self, version: int, entries: Mapping[str, Mapping[str, Any]]
    ) -> None:
        """A Full update, atomically."""
        ...

    async def update_local_list(
        self, version: int, changes: Mapping[str, Mapping[str, Any] | None]
    ) -> None:
        """A Differential update (None removes the tag), atomically."""
        ...


@attrs.frozen
class ListLimits:
    """The configuration keys that bound an update."""

    per_update: int  # SendLocalListMaxLength: entries in one SendLocalList.req
    total: int  # LocalAuthListMaxLength: entries in the list


class _Refused(OcppError):
    """An update the charger does not apply: `status` is the answer, the message says why.
    Never escapes `LocalAuthorizationList.update`."""

    def __init__(self, status: UpdateStatus, why: str, *, level: int = logging.WARNING):
        super().__init__(why)
        self.status = status
        self.level = level  # a refused request is the central system's; a failed write ours


def list_enabled(store: ConfigurationStore) -> bool:
    """The list is supported (3.5.2: LocalAuthListManagement in SupportedFeatureProfiles) and
    LocalAuthListEnabled is true. Read at every use: ChangeConfiguration applies at once."""
    profiles = store.get("SupportedFeatureProfiles") or ""
    supported = PROFILE in (p.strip() for p in profiles.split(","))
    return supported and store.get("LocalAuthListEnabled") == "true"


def limits_of(store: ConfigurationStore) -> ListLimits:
    """The limits of a charger whose list is enabled (the profile requires both keys)."""
    return ListLimits(
        per_update=store.get_int("SendLocalListMaxLength"),
        total=store.get_int("LocalAuthListMaxLength"),
    )


class LocalAuthorizationList:
    """The list in memory, loaded from (`load()`, before use) and written through to `store`
    (memory only: None).

    `store_errors` are the exception types the store raises; an update they interrupt is
    answered Failed and changes nothing. Updates are applied one at a time: each one is
    checked against the list the previous one left."""

    def __init__(
        self,
        store: LocalListStore | None = None,
        *,
        clock: Clock = utc_now,
        store_errors: StoreErrors = (),
    ) -> None:
        self._store = store
        self._errors = store_errors
        self._clock = clock
        self._version = 0
        self._entries: dict[str, IdTagInfo] = {}  # by folded idTag (`idtags.key`)
        self._updating = trio.Lock()

    async def load(self) -> None:
        """Take what the store holds (at boot, before the list is used)."""
        if self._store is None:
            return
        try:
            self._version, entries = await self._store.local_list()
        except self._errors as exc:
            # An empty list reports version 0, which makes the central system send it all.
            log.error("local authorization list not loaded, starting empty: %s", exc)
            return
        self._entries = {idtags.key(t): info for t, info in entries.items()}

    @property
    def version(self) -> int:
        """The listVersion GetLocalListVersion reports: that of the last accepted update, but 0
        while the list is empty (5.10: "0 SHALL be used to indicate that the local
        authorization list is empty"; OCTT TC_042_2 sends an empty Full list with version 1
        and expects 0)."""
        return self._version if self._entries else 0

    def lookup(self, id_tag: str) -> IdTagInfo | None:
        """The entry as it stands now (past its expiryDate it is Expired), or None."""
        info = self._entries.get(idtags.key(id_tag))
        return None if info is None else effective(info, self._clock())

    def __contains__(self, id_tag: object) -> bool:
        return isinstance(id_tag, str) and idtags.key(id_tag) in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    async def update(
        self,
        update_type: UpdateType,
        list_version: int,
        entries: Sequence[Mapping[str, Any]],
        limits: ListLimits,
    ) -> UpdateStatus:
        """Apply a SendLocalList.req (`entries`: its localAuthorizationList, snake_case) and
        return the status to answer once it is stored. Never raises for a bad request or a
        failed write."""
        async with self._updating:
            try:
                changes = _changes(entries, update_type, limits)
                result = self._result(update_type, list_version, changes, limits)
                await self._persist(update_type, list_version, changes, result)
            except _Refused as refused:
                level = refused.level
                log.log(level, "SendLocalList %s v%d: %s", update_type, list_version, refused)
                return refused.status
            self._version, self._entries = list_version, result
        log.info(
            "local authorization list updated (%s): version %d, %d entries",
            update_type,
            list_version,
            len(result),
        )
        return UpdateStatus.accepted

    def _result(
        self,
        update_type: UpdateType,
        list_version: int,
        changes: Mapping[str, IdTagInfo | None],
        limits: ListLimits,
    ) -> dict[str, IdTagInfo]:
        """The list after the update, or `_Refused`."""
        if update_type == UpdateType.full:
            result = {tag: info for tag, info in changes.items() if info is not None}
        else:
            # 6.41: listVersion is the version "after the update"; 6.42 VersionMismatch: it is
            # "less or equal then version number of current list".
            if list_version <= self.version:
                raise _Refused(
                    UpdateStatus.version_mismatch,
                    f"not newer than the current version {self.version}",
                )
            result = dict(self._entries)
            for tag, info in changes.items():
                if info is None:
                    result.pop(tag, None)
                else:
                    result[tag] = info
        if len(result) > limits.total:
            raise _Refused(
                UpdateStatus.failed,
                f"the list would hold {len(result)} entries; LocalAuthListMaxLength is "
                f"{limits.total}",
            )
        if list_version < (1 if result else 0):
            # GetLocalListVersion could not report it: 0 means empty, -1 unsupported.
            raise _Refused(UpdateStatus.failed, "a list with entries needs listVersion 1 or more")
        return result

    async def _persist(
        self,
        update_type: UpdateType,
        list_version: int,
        changes: Mapping[str, IdTagInfo | None],
        result: Mapping[str, IdTagInfo],
    ) -> None:
        if self._store is None:
            return
        try:
            if update_type == UpdateType.full:
                await self._store.replace_local_list(list_version, result)
            else:
                await self._store.update_local_list(list_version, changes)
        except self._errors as exc:
            raise _Refused(UpdateStatus.failed, f"not stored: {exc}", level=logging.ERROR) from exc


def _changes(
    entries: Sequence[Mapping[str, Any]], update_type: UpdateType, limits: ListLimits
) -> dict[str, IdTagInfo | None]:
    """Folded idTag -> its new idTagInfo (None: remove it) of a well-formed request, or
    `_Refused`. Tags that differ only in case are the same tag, so listing both is a
    duplicate."""
    if len(entries) > limits.per_update:
        raise _Refused(
            UpdateStatus.failed,
            f"{len(entries)} entries; SendLocalListMaxLength is {limits.per_update}",
        )
    changes: dict[str, IdTagInfo | None] = {}
    for entry in entries:
        tag = entry["id_tag"]
        info = entry.get("id_tag_info")
        if idtags.key(tag) in changes:
            raise _Refused(UpdateStatus.failed, f"idTag {tag} is listed twice (5.15: unique)")
        if info is None and update_type == UpdateType.full:
            raise _Refused(UpdateStatus.failed, f"idTag {tag} has no idTagInfo (6.41: required)")
        if info is not None and info.get("expiry_date") and not parse_expiry(info["expiry_date"]):
            raise _Refused(UpdateStatus.failed, f"idTag {tag} has an unreadable expiryDate")
        changes[idtags.key(tag)] = None if info is None else dict(info)
    return changes


def tags_of(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    """The idTags a SendLocalList.req names."""
    return [entry["id_tag"] for entry in entries]
