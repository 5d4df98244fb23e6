"""Local authorization: the persisted authorization cache, the local authorization list
(SendLocalList, GetLocalListVersion) and the offline rules that decide who may charge.

Unit tests of the cache and the list (including persistence in a reopened database), the
decision matrix of the `Authorizer`, and scenarios through the whole station against the fake
central system, named after the OCTT cases they cover (docs/conformance.md)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
from ocpp.v16 import call, call_result
from ocpp.v16.datatypes import AuthorizationData, IdTagInfo
from ocpp.v16.enums import AuthorizationStatus, UpdateStatus, UpdateType

from dcocpp.ocpp.authcache import AuthorizationCache, AuthStoreError
from dcocpp.ocpp.authorization import Authorizer, Decision
from dcocpp.ocpp.locallist import ListLimits, LocalAuthorizationList
from dcocpp.ocpp.services import Identity
from dcocpp.ocpp.session import ChargePointSession
from dcocpp.station.station import load_configuration_store
from dcocpp.storage.database import Database, StorageError
from tests.csms import FakeCsms
from tests.loop_database import on_loop
from tests.station_harness import WALL_START, Harness, charger_config, running_station

# The station scenarios run on the simulated guns and on the PLC backend.
SCENARIO = pytest.mark.usefixtures("backend")

ACCEPTED = AuthorizationStatus.accepted
FULL, DIFFERENTIAL = UpdateType.full, UpdateType.differential
LIMITS = ListLimits(per_update=250, total=1000)
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
EXPIRED_AT = "2026-11-24T11:00:00Z"  # an hour before NOW
VALID_UNTIL = "2026-11-24T13:00:00Z"  # an hour after NOW


def entry(id_tag: str, status: str | None = "Accepted", **info: Any) -> dict[str, Any]:
    """A localAuthorizationList entry as the handler receives it (snake_case); no status:
    no idTagInfo (a Differential removal)."""
    if status is None:
        return {"id_tag": id_tag}
    return {"id_tag": id_tag, "id_tag_info": {"status": status, **info}}


def data(id_tag: str, status: str | None = "Accepted", **info: Any) -> AuthorizationData:
    """The same entry as the central system's dataclass."""
    return AuthorizationData(id_tag, None if status is None else IdTagInfo(status=status, **info))


def send_local_list(
    version: int, update_type: UpdateType, entries: Iterable[AuthorizationData]
) -> call.SendLocalList:
    return call.SendLocalList(
        list_version=version, update_type=update_type, local_authorization_list=list(entries)
    )


def refusing(*_: Any, **__: Any) -> None:
    """A write of the station's `Database` that the disk refuses."""
    raise StorageError("disk I/O error")


async def failing(*_: Any, **__: Any) -> None:
    """The same, of a store of the OCPP layer."""
    refusing()


class FailingStore:
    """A store whose every write fails, as a full or broken disk would."""

    def __init__(self, cache: Mapping[str, dict[str, Any]] | None = None):
        self._cache = dict(cache or {})

    async def auth_cache(self) -> dict[str, dict[str, Any]]:
        return dict(self._cache)

    put_auth_cache = delete_auth_cache = replace_local_list = update_local_list = failing

    async def local_list(self) -> tuple[int, dict[str, dict[str, Any]]]:
        return 4, {"KEPT": {"status": "Accepted"}}


def _store(store: Any) -> Any:
    """A database as the stores of the OCPP layer take it (statements on the loop)."""
    return on_loop(store) if isinstance(store, Database) else store


async def loaded_cache(store: Any = None, **options: Any) -> AuthorizationCache:
    """An authorization cache over `store`, loaded as the station loads it at boot."""
    cache = AuthorizationCache(_store(store), **options)
    await cache.load()
    return cache


async def loaded_list(store: Any = None, **options: Any) -> LocalAuthorizationList:
    """A local authorization list over `store`, loaded as the station loads it at boot."""
    local = LocalAuthorizationList(_store(store), **options)
    await local.load()
    return local


# --- the authorization cache ------------------------------------------------------------------


async def test_cache_survives_reopening_the_database(tmp_path: Path) -> None:
    db = Database.open(tmp_path)
    cache = await loaded_cache(db, clock=lambda: NOW, store_errors=(StorageError,))
    await cache.update("TAG-1", {"status": "Accepted", "expiry_date": VALID_UNTIL})
    await cache.update("TAG-2", {"status": "Blocked"})
    await cache.update("TAG-1", {"status": "Accepted", "parent_id_tag": "FLEET"})  # the latest wins
    db.close()
    db = Database.open(tmp_path)
    try:
        cache = await loaded_cache(db, clock=lambda: NOW, store_errors=(StorageError,))
        assert len(cache) == 2
        assert cache.lookup("TAG-1") == {"status": "Accepted", "parent_id_tag": "FLEET"}
        assert cache.lookup("TAG-2") == {"status": "Blocked"}
        assert db.auth_cache() == {  # least recently updated first, by folded tag
            "tag-2": {"status": "Blocked"},
            "tag-1": {"status": "Accepted", "parent_id_tag": "FLEET"},
        }
    finally:
        db.close()


async def test_cache_entry_past_its_expiry_is_expired() -> None:
    now = NOW
    cache = await loaded_cache(clock=lambda: now)
    await cache.update("TAG", {"status": "Accepted", "expiry_date": "2026-11-24T12:30:00Z"})
    assert cache.lookup("TAG") == {"status": "Accepted", "expiry_date": "2026-11-24T12:30:00Z"}
    now = NOW + timedelta(minutes=30)
    assert cache.lookup("TAG") == {"status": "Expired", "expiry_date": "2026-11-24T12:30:00Z"}
    assert cache.lookup("OTHER") is None


async def test_full_cache_evicts_not_valid_entries_first_then_the_oldest(tmp_path: Path) -> None:
    db = Database.open(tmp_path)
    try:
        cache = await loaded_cache(db, clock=lambda: NOW, store_errors=(StorageError,), capacity=3)
        await cache.update("OLD", {"status": "Accepted"})
        await cache.update("BLOCKED", {"status": "Blocked"})
        await cache.update("LAPSED", {"status": "Accepted", "expiry_date": EXPIRED_AT})
        await cache.update("NEW", {"status": "Accepted"})  # evicts BLOCKED (not valid, oldest)
        assert set(db.auth_cache()) == {"old", "lapsed", "new"}  # stored folded
        await cache.update("NEWER", {"status": "Accepted"})  # evicts LAPSED (expired: not valid)
        await cache.update("OLD", {"status": "Accepted"})  # an update makes it the newest
        await cache.update("NEWEST", {"status": "Accepted"})  # evicts NEW, now the oldest valid
        assert list(db.auth_cache()) == ["newer", "old", "newest"]
        assert len(cache) == 3 and "NEW" not in cache
    finally:
        db.close()


async def test_clear_cache_is_durable(tmp_path: Path) -> None:
    db = Database.open(tmp_path)
    cache = await loaded_cache(db, store_errors=(StorageError,))
    await cache.update("TAG", {"status": "Accepted"})
    await cache.clear()
    db.close()
    db = Database.open(tmp_path)
    try:
        assert db.auth_cache() == {}
        assert len(await loaded_cache(db, store_errors=(StorageError,))) == 0
    finally:
        db.close()


async def test_cache_write_failures(caplog: pytest.LogCaptureFixture) -> None:
    cache = await loaded_cache(
        FailingStore({"OLD": {"status": "Accepted"}}), store_errors=(StorageError,)
    )
    # An answer that cannot be stored is still used in this run, and the failure logged.
    await cache.update("TAG", {"status": "Accepted"})
    assert cache.lookup("TAG") == {"status": "Accepted"}
    assert "authorization cache entry for TAG not stored: disk I/O error" in caplog.text
    # A ClearCache that is not durable changes nothing (the handler answers Rejected).
    with pytest.raises(AuthStoreError, match="not cleared: disk I/O error"):
        await cache.clear()
    assert set(_tags(cache, "OLD", "TAG")) == {"OLD", "TAG"}


async def test_unreadable_cache_and_list_start_empty(caplog: pytest.LogCaptureFixture) -> None:
    class Unreadable:
        auth_cache = local_list = failing

    assert len(await loaded_cache(Unreadable(), store_errors=(StorageError,))) == 0
    assert (await loaded_list(Unreadable(), store_errors=(StorageError,))).version == 0
    assert "authorization cache not loaded, starting empty: disk I/O error" in caplog.text
    assert "local authorization list not loaded, starting empty: disk I/O error" in caplog.text


def _tags(cache: AuthorizationCache, *tags: str) -> list[str]:
    return [tag for tag in tags if tag in cache]


# --- the local authorization list -------------------------------------------------------------


async def test_full_and_differential_updates_survive_reopening_the_database(tmp_path: Path) -> None:
    db = Database.open(tmp_path)
    local = await loaded_list(db, clock=lambda: NOW, store_errors=(StorageError,))
    assert (local.version, len(local)) == (0, 0)
    full = [entry("A"), entry("B", parent_id_tag="FLEET"), entry("C", "Blocked")]
    assert await local.update(FULL, 3, full, LIMITS) == UpdateStatus.accepted
    changes = [entry("D"), entry("B", "Invalid"), entry("C", None), entry("GONE", None)]
    assert await local.update(DIFFERENTIAL, 4, changes, LIMITS) == UpdateStatus.accepted
    db.close()
    db = Database.open(tmp_path)
    try:
        assert db.local_list() == (
            4,
            {"a": {"status": "Accepted"}, "b": {"status": "Invalid"}, "d": {"status": "Accepted"}},
        )
        local = await loaded_list(db, clock=lambda: NOW, store_errors=(StorageError,))
        assert local.version == 4
        assert local.lookup("B") == {"status": "Invalid"}
        assert local.lookup("C") is None
        # A Full update replaces everything, whatever its version.
        assert await local.update(FULL, 2, [entry("E")], LIMITS) == UpdateStatus.accepted
        assert db.local_list() == (2, {"e": {"status": "Accepted"}})
    finally:
        db.close()


async def test_version_is_zero_while_the_list_is_empty(tmp_path: Path) -> None:
    local = await loaded_list()
    assert await local.update(FULL, 7, [], LIMITS) == UpdateStatus.accepted
    assert local.version == 0  # 5.10: 0 means empty
    assert await local.update(DIFFERENTIAL, 1, [entry("A")], LIMITS) == UpdateStatus.accepted
    assert local.version == 1
    assert await local.update(DIFFERENTIAL, 2, [entry("A", None)], LIMITS) == UpdateStatus.accepted
    assert local.version == 0


@pytest.mark.parametrize("version", [3, 2, 0, -1])
async def test_differential_not_newer_than_the_list_is_a_version_mismatch(version: int) -> None:
    local = await loaded_list()
    assert await local.update(FULL, 3, [entry("A")], LIMITS) == UpdateStatus.accepted
    assert await local.update(DIFFERENTIAL, version, [entry("B")], LIMITS) == (
        UpdateStatus.version_mismatch
    )
    assert (local.version, local.lookup("B")) == (3, None)


@pytest.mark.parametrize(
    ("update_type", "version", "entries", "why"),
    [
        (FULL, 1, [entry(f"T{i}") for i in range(4)], "4 entries; SendLocalListMaxLength is 3"),
        (FULL, 1, [entry("X"), entry("X", "Blocked")], "idTag X is listed twice"),
        (DIFFERENTIAL, 9, [entry("X"), entry("X", None)], "idTag X is listed twice"),
        (FULL, 1, [entry("X"), entry("x")], "idTag x is listed twice"),
        (FULL, 1, [entry("X", None)], "idTag X has no idTagInfo"),
        (FULL, 1, [entry("X", expiry_date="soon")], "idTag X has an unreadable expiryDate"),
        (FULL, 1, [entry(t) for t in "XYZ"], "would hold 3 entries; LocalAuthListMaxLength is 2"),
        (DIFFERENTIAL, 9, [entry("X"), entry("Y")], "would hold 3 entries"),
        (FULL, 0, [entry("X")], "a list with entries needs listVersion 1 or more"),
    ],
)
async def test_refused_updates_answer_failed_and_change_nothing(
    caplog: pytest.LogCaptureFixture,
    update_type: UpdateType,
    version: int,
    entries: list[dict[str, Any]],
    why: str,
) -> None:
    local = await loaded_list()
    assert await local.update(FULL, 5, [entry("OLD")], LIMITS) == UpdateStatus.accepted
    limits = ListLimits(per_update=3, total=2)
    assert await local.update(update_type, version, entries, limits) == UpdateStatus.failed
    assert (local.version, len(local), local.lookup("OLD")) == (5, 1, {"status": "Accepted"})
    assert why in caplog.text


async def test_id_tags_are_case_insensitive_in_the_list_and_the_cache(tmp_path: Path) -> None:
    """OCPP 1.6: an idTag is case-insensitive. A tag found in other letters is the same entry,
    in memory and after reopening the database."""
    db = Database.open(tmp_path)
    try:
        local = await loaded_list(db)
        assert await local.update(FULL, 1, [entry("AbC-1")], LIMITS) == UpdateStatus.accepted
        assert local.lookup("abc-1") == local.lookup("ABC-1") == {"status": "Accepted"}
        assert "aBc-1" in local
        assert await local.update(DIFFERENTIAL, 2, [entry("ABC-1", None)], LIMITS) == (
            UpdateStatus.accepted
        )
        assert local.lookup("AbC-1") is None and len(local) == 0

        cache = await loaded_cache(db, clock=lambda: NOW)
        await cache.update("Card-7", {"status": "Accepted"})
        await cache.update("CARD-7", {"status": "Blocked"})
        assert len(cache) == 1 and cache.lookup("card-7") == {"status": "Blocked"}
        assert (await loaded_cache(db, clock=lambda: NOW)).lookup("Card-7") == {"status": "Blocked"}
        await cache.forget(["card-7"])
        assert "Card-7" not in cache
        assert (await loaded_cache(db, clock=lambda: NOW)).lookup("CARD-7") is None
    finally:
        db.close()


async def test_list_write_failure_answers_failed_and_keeps_the_old_list(
    caplog: pytest.LogCaptureFixture,
) -> None:
    local = await loaded_list(FailingStore(), store_errors=(StorageError,))
    assert local.version == 4
    assert await local.update(FULL, 5, [entry("NEW")], LIMITS) == UpdateStatus.failed
    assert await local.update(DIFFERENTIAL, 5, [entry("NEW")], LIMITS) == UpdateStatus.failed
    assert (local.version, local.lookup("NEW"), local.lookup("KEPT")) == (
        4,
        None,
        {"status": "Accepted"},
    )
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "SendLocalList Full v5: not stored: disk I/O error",
        "SendLocalList Differential v5: not stored: disk I/O error",
    ]


async def test_list_entry_past_its_expiry_is_expired() -> None:
    local = await loaded_list(clock=lambda: NOW)
    entries = [entry("OLD", expiry_date=EXPIRED_AT), entry("NEW", expiry_date=VALID_UNTIL)]
    assert await local.update(FULL, 1, entries, LIMITS) == UpdateStatus.accepted
    assert local.lookup("OLD") == {"status": "Expired", "expiry_date": EXPIRED_AT}
    assert local.lookup("NEW") == {"status": "Accepted", "expiry_date": VALID_UNTIL}


# --- who may charge offline (the Authorizer's decisions) ----------------------------------------


class _NoControl:
    connector_ids: list[int] = []

    def statuses(self) -> list[Any]:
        return []


def offline_session(tmp_path: Path, keys: Mapping[str, bool]) -> ChargePointSession:
    """A session that never connected (offline), on the shipped keys with `keys` changed."""
    store = load_configuration_store(charger_config(tmp_path))
    for key, value in keys.items():
        store.set_value(key, value)
    return ChargePointSession(
        Identity("CP", "vendor", "model", "1.0"),
        "ws://csms.test/ocpp",
        store,
        _NoControl(),  # type: ignore[arg-type]
        auth_cache=AuthorizationCache(clock=lambda: NOW),
        local_list=LocalAuthorizationList(clock=lambda: NOW),
    )


OFFLINE_DEFAULTS = {
    "LocalAuthListEnabled": True,
    "AuthorizationCacheEnabled": True,
    "LocalAuthorizeOffline": True,
    "AllowOfflineTxForUnknownId": False,
}


@pytest.mark.parametrize(
    ("listed", "cached", "keys", "expected"),
    [
        # The list, offline, with LocalAuthorizeOffline.
        ("Accepted", None, {}, Decision(ACCEPTED, "FLEET", "local list (offline)")),
        # 3.5.4: a listed tag that is not Accepted MUST be rejected, whatever the other keys.
        ("Blocked", None, {"AllowOfflineTxForUnknownId": True}, ("Blocked", "local list")),
        ("Invalid", "Accepted", {}, ("Invalid", "local list")),  # the list has priority (3.5.3)
        ("Accepted", "Blocked", {}, ("Accepted", "local list")),
        ("Expired", None, {}, ("Expired", "local list")),
        # Without LocalAuthorizeOffline the list is not used: the tag counts as unknown.
        ("Accepted", None, {"LocalAuthorizeOffline": False}, ("Invalid", "offline rule")),
        (
            "Accepted",
            None,
            {"LocalAuthorizeOffline": False, "AllowOfflineTxForUnknownId": True},
            ("Accepted", "offline rule"),
        ),
        # A disabled list is not consulted.
        ("Accepted", None, {"LocalAuthListEnabled": False}, ("Invalid", "offline rule")),
        # The cache, the same way.
        (None, "Accepted", {}, ("Accepted", "cache")),
        (None, "Blocked", {"AllowOfflineTxForUnknownId": True}, ("Blocked", "cache")),
        (None, "Accepted", {"AuthorizationCacheEnabled": False}, ("Invalid", "offline rule")),
        # Unknown tags: AllowOfflineTxForUnknownId.
        (None, None, {}, ("Invalid", "offline rule")),
        (None, None, {"AllowOfflineTxForUnknownId": True}, ("Accepted", "offline rule")),
    ],
)
async def test_offline_decisions(
    tmp_path: Path,
    listed: str | None,
    cached: str | None,
    keys: dict[str, bool],
    expected: Decision | tuple[str, str],
) -> None:
    session = offline_session(tmp_path, {**OFFLINE_DEFAULTS, **keys})
    if listed is not None:
        info = {"parent_id_tag": "FLEET"} if listed == "Accepted" else {}
        if listed == "Expired":  # an Accepted entry whose validity has passed
            listed, info = "Accepted", {"expiry_date": EXPIRED_AT}
        await session.local_list.update(FULL, 1, [entry("TAG", listed, **info)], LIMITS)
    if cached is not None:
        await session.auth_cache.update("TAG", {"status": cached})
    decision = await Authorizer(session).authorize("TAG")
    if isinstance(expected, tuple):
        status, source = expected
        suffix = "" if source == "offline rule" else " (offline)"
        assert (decision.status, decision.source) == (status, source + suffix)
    else:
        assert decision == expected


async def test_offline_rules_follow_key_changes_at_once(tmp_path: Path) -> None:
    session = offline_session(tmp_path, OFFLINE_DEFAULTS)
    authorizer = Authorizer(session)
    assert (await authorizer.authorize("WHO")).status == "Invalid"
    assert session.store.change("AllowOfflineTxForUnknownId", "true") == "Accepted"
    assert (await authorizer.authorize("WHO")).status == "Accepted"


# --- station scenarios: the local list ----------------------------------------------------------


def local_list_of(h: Harness) -> LocalAuthorizationList:
    assert h.station.session is not None
    return h.station.session.local_list


def cache_of(h: Harness) -> AuthorizationCache:
    assert h.station.session is not None
    return h.station.session.auth_cache


async def list_version(h: Harness) -> int:
    result = await h.csms_call(call.GetLocalListVersion())
    assert isinstance(result, call_result.GetLocalListVersion)
    return result.list_version


def flow(h: Harness, connector_id: int, since: int = 0) -> list[tuple[str, Any]]:
    """The session's messages in arrival order: (action, status or idTag)."""
    out: list[tuple[str, Any]] = []
    for _, action, p in h.csms.calls[since:]:
        if action == "StatusNotification" and p["connector_id"] == connector_id:
            out.append((action, p["status"]))
        elif action in ("Authorize", "StartTransaction"):
            out.append((action, p["id_tag"]))
    return out


LIST_KEYS = {"LocalAuthListEnabled": True, "LocalPreAuthorize": True, "ConnectionTimeOut": 10}


@SCENARIO
async def test_tc_008_id_in_local_list_starts_without_authorize(
    autojump_clock: Any, tmp_path: Path
) -> None:
    keys = {**LIST_KEYS, "AuthorizationCacheEnabled": False}
    async with running_station(charger_config(tmp_path), keys=keys) as h:
        await h.booted()
        assert await list_version(h) == 0
        result = await h.csms_call(send_local_list(1, FULL, [data("TAG-008")]))
        assert result == call_result.SendLocalList(status=UpdateStatus.accepted)
        since = h.csms.mark()
        await h.station.present_id(1, "TAG-008")
        await h.wait_status(1, "Preparing", since=since)
        await h.station.plug(1)
        await h.wait_status(1, "Charging", since=since)
        start_time = h.csms.times("StartTransaction")[0]
    assert h.csms.authorize_count() == 0
    assert flow(h, 1, since) == [
        ("StatusNotification", "Preparing"),
        ("StartTransaction", "TAG-008"),
        ("StatusNotification", "Charging"),
    ]
    assert h.csms.received("StartTransaction") == [
        {
            "connector_id": 1,
            "id_tag": "TAG-008",
            "meter_start": 1_000_000,
            "timestamp": h.wall_time(start_time),
        }
    ]
    assert "TAG-008" not in cache_of(h)


@SCENARIO
async def test_tag_in_local_list_in_other_letters_starts_without_authorize(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """The list says TAG-008, the reader says tag-008: the same tag (idTags are
    case-insensitive). StartTransaction carries the tag as presented."""
    keys = {**LIST_KEYS, "AuthorizationCacheEnabled": False}
    async with running_station(charger_config(tmp_path), keys=keys) as h:
        await h.booted()
        result = await h.csms_call(send_local_list(1, FULL, [data("TAG-008")]))
        assert result == call_result.SendLocalList(status=UpdateStatus.accepted)
        since = h.csms.mark()
        await h.station.present_id(1, "tag-008")
        await h.station.plug(1)
        await h.wait_status(1, "Charging", since=since)
    assert h.csms.authorize_count() == 0
    assert [p["id_tag"] for p in h.csms.received("StartTransaction")] == ["tag-008"]


@SCENARIO
async def test_tc_042_1_get_local_list_version_not_supported(
    autojump_clock: Any, tmp_path: Path
) -> None:
    keys = {"LocalAuthListEnabled": False}
    async with running_station(charger_config(tmp_path), keys=keys) as h:
        await h.booted()
        assert await h.csms_call_raw("GetLocalListVersion", {}) == {"listVersion": -1}
        # TC_043_1: a list sent anyway is NotSupported.
        assert await h.csms_call(send_local_list(1, FULL, [data("A")])) == (
            call_result.SendLocalList(status=UpdateStatus.not_supported)
        )
        # Enabled at run time: in force at once.
        enable = await h.csms_call(call.ChangeConfiguration("LocalAuthListEnabled", "true"))
        assert enable.status == "Accepted"
        assert await list_version(h) == 0
        assert await h.csms_call(send_local_list(1, FULL, [data("A")])) == (
            call_result.SendLocalList(status=UpdateStatus.accepted)
        )
        assert await list_version(h) == 1
        await h.csms_call(call.ChangeConfiguration("LocalAuthListEnabled", "false"))
        assert await list_version(h) == -1
        # A charger whose key file does not list the profile has no list at all.
        await h.csms_call(call.ChangeConfiguration("LocalAuthListEnabled", "true"))
        h.store.set_value("SupportedFeatureProfiles", "Core,RemoteTrigger")
        assert await list_version(h) == -1


@SCENARIO
async def test_tc_042_2_send_local_list_full_with_an_empty_list(
    autojump_clock: Any, tmp_path: Path
) -> None:
    config = charger_config(tmp_path)
    async with running_station(config, keys={"LocalAuthListEnabled": True}) as h:
        await h.booted()
        result = await h.csms_call_raw("SendLocalList", {"listVersion": 1, "updateType": "Full"})
        assert result == {"status": "Accepted"}
        assert await h.csms_call_raw("GetLocalListVersion", {}) == {"listVersion": 0}
    db = Database.open(config.data_dir)
    try:
        assert db.local_list() == (1, {})  # the version is stored; the list reads as empty
    finally:
        db.close()


@SCENARIO
async def test_tc_043_send_local_list_full_then_differential(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path), keys=LIST_KEYS) as h:
        await h.booted()
        full = [data("A"), data("B"), data("C", "Blocked")]
        assert (await h.csms_call(send_local_list(1, FULL, full))).status == "Accepted"
        assert await list_version(h) == 1
        expiry = "2026-11-24T00:00:00Z"  # ten minutes after the station's clock starts
        changes = [data("D", expiry_date=expiry), data("B", "Invalid"), data("C", None)]
        assert (await h.csms_call(send_local_list(2, DIFFERENTIAL, changes))).status == ("Accepted")
        assert await list_version(h) == 2
        local = local_list_of(h)
        assert [local.lookup(t) for t in "ABCD"] == [
            {"status": "Accepted"},
            {"status": "Invalid"},
            None,
            {"status": "Accepted", "expiry_date": expiry},
        ]
        # The charge point authorizes the tags on the list (LocalPreAuthorize: no Authorize).
        since = h.csms.mark()
        await h.station.plug(1)
        await h.station.present_id(1, "D")
        await h.wait_status(1, "Charging", since=since)
    assert h.csms.authorize_count() == 0
    assert h.csms.received("StartTransaction")[0]["id_tag"] == "D"


@SCENARIO
async def test_tc_043_2_send_local_list_version_mismatch(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path), keys=LIST_KEYS) as h:
        await h.booted()

        async def send(version: int, kind: UpdateType, tag: str) -> str:
            return str((await h.csms_call(send_local_list(version, kind, [data(tag)]))).status)

        assert await send(2, FULL, "A") == "Accepted"
        assert await list_version(h) == 2
        assert await send(5, DIFFERENTIAL, "B") == "Accepted"
        assert await list_version(h) == 5
        # 6.42: a Differential whose listVersion is not newer than the list's.
        assert await send(5, DIFFERENTIAL, "C") == "VersionMismatch"
        assert await send(4, DIFFERENTIAL, "C") == "VersionMismatch"
        assert await list_version(h) == 5
        assert local_list_of(h).lookup("C") is None
        # The central system's remedy (5.15): a Full list, which has no version rule.
        assert await send(3, FULL, "C") == "Accepted"
        assert await list_version(h) == 3
        assert len(local_list_of(h)) == 1


@SCENARIO
async def test_tc_043_3_send_local_list_failed_over_send_local_list_max_length(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path), keys=LIST_KEYS) as h:
        await h.booted()
        assert h.store.get_int("SendLocalListMaxLength") == 250
        assert (await h.csms_call(send_local_list(1, FULL, [data("OLD")]))).status == "Accepted"
        too_many = [data(f"TAG-{i:03}") for i in range(251)]
        result = await h.csms_call(send_local_list(2, FULL, too_many))
        assert result == call_result.SendLocalList(status=UpdateStatus.failed)
        assert await list_version(h) == 1
        assert local_list_of(h).lookup("OLD") == {"status": "Accepted"}
        just_enough = too_many[:250]
        assert (await h.csms_call(send_local_list(2, FULL, just_enough))).status == "Accepted"
        assert len(local_list_of(h)) == 250


@SCENARIO
async def test_tc_043_3_send_local_list_failed_over_local_auth_list_max_length(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path), keys=LIST_KEYS) as h:
        await h.booted()
        h.store.set_value("LocalAuthListMaxLength", 2)  # readonly: as an integrator sets it
        assert (await h.csms_call(send_local_list(1, FULL, [data("A")]))).status == "Accepted"
        assert (await h.csms_call(send_local_list(2, DIFFERENTIAL, [data("B")]))).status == (
            "Accepted"
        )
        third = await h.csms_call(send_local_list(3, DIFFERENTIAL, [data("C")]))
        assert third == call_result.SendLocalList(status=UpdateStatus.failed)
        replaced = [data("B", None), data("C")]  # one out, one in: still two
        assert (await h.csms_call(send_local_list(3, DIFFERENTIAL, replaced))).status == (
            "Accepted"
        )
        assert await list_version(h) == 3


@SCENARIO
async def test_tc_043_3_send_local_list_failed_when_it_cannot_be_stored(
    autojump_clock: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_station(charger_config(tmp_path), keys=LIST_KEYS) as h:
        await h.booted()
        assert (await h.csms_call(send_local_list(1, FULL, [data("A")]))).status == "Accepted"
        monkeypatch.setattr(Database, "replace_local_list", refusing)
        result = await h.csms_call(send_local_list(2, FULL, [data("B")]))
        assert result == call_result.SendLocalList(status=UpdateStatus.failed)
        assert await list_version(h) == 1  # answered, and the session carries on
        assert local_list_of(h).lookup("B") is None
    assert "SendLocalList Full v2: not stored: disk I/O error" in caplog.text


@SCENARIO
async def test_local_list_and_cache_survive_a_soft_reset(
    autojump_clock: Any, tmp_path: Path
) -> None:
    keys = {**LIST_KEYS, "AuthorizationCacheEnabled": True}
    async with running_station(charger_config(tmp_path), keys=keys) as h:
        await h.booted()
        assert (await h.csms_call(send_local_list(3, FULL, [data("LISTED")]))).status == (
            "Accepted"
        )
        await present_and_time_out(h, "CACHED")  # Authorize.req fills the cache
        assert h.csms.authorize_count("CACHED") == 1
        before = h.station.session
        assert (await h.csms_call(call.Reset(type="Soft"))).status == "Accepted"
        await h.wait_calls("BootNotification", 2)
        await h.wait_until(lambda: h.station.session is not before and h.station.started.is_set())
        boots = [i for i, (_, action, _) in enumerate(h.csms.calls) if action == "BootNotification"]
        await h.wait_calls("StatusNotification", 3, since=boots[1])  # the reboot's statuses
        assert await list_version(h) == 3
        await present_and_time_out(h, "LISTED")
        await present_and_time_out(h, "CACHED")
        assert h.csms.authorize_count() == 1  # both answered locally after the reboot


async def present_and_time_out(h: Harness, id_tag: str, connector_id: int = 1) -> None:
    """Present `id_tag` on an unplugged connector; wait until it gave up (ConnectionTimeOut)."""
    since = h.csms.mark()
    await h.station.present_id(connector_id, id_tag)
    await h.wait_status(connector_id, "Preparing", since=since)
    preparing = since + next(
        i
        for i, (_, action, p) in enumerate(h.csms.calls[since:])
        if action == "StatusNotification"
        and (p["connector_id"], p["status"]) == (connector_id, "Preparing")
    )
    await h.wait_status(connector_id, "Available", since=preparing + 1)


# --- station scenarios: the list and the cache together -----------------------------------------


@SCENARIO
async def test_tc_061_clear_cache_is_durable_and_leaves_the_list(
    autojump_clock: Any, tmp_path: Path
) -> None:
    keys = {**LIST_KEYS, "AuthorizationCacheEnabled": True}
    config = charger_config(tmp_path)
    async with running_station(config, keys=keys) as h:
        await h.booted()
        assert (await h.csms_call(send_local_list(1, FULL, [data("LISTED")]))).status == (
            "Accepted"
        )
        await present_and_time_out(h, "CACHED")
        assert "CACHED" in cache_of(h)
        assert await h.csms_call(call.ClearCache()) == call_result.ClearCache(status="Accepted")
        assert len(cache_of(h)) == 0
        await present_and_time_out(h, "LISTED")  # the list is not the cache
        assert h.csms.authorize_count("LISTED") == 0
        await present_and_time_out(h, "CACHED")
        assert h.csms.authorize_count("CACHED") == 2  # asked again
        # 5.4: with the cache disabled, ClearCache is Rejected (as libocpp answers).
        disable = await h.csms_call(call.ChangeConfiguration("AuthorizationCacheEnabled", "false"))
        assert disable.status == "Accepted"
        assert await h.csms_call(call.ClearCache()) == call_result.ClearCache(status="Rejected")
        assert "CACHED" in cache_of(h)
    db = Database.open(config.data_dir)
    try:
        assert list(db.auth_cache()) == ["cached"]
    finally:
        db.close()


@SCENARIO
async def test_clear_cache_rejected_when_it_cannot_be_stored(
    autojump_clock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        await cache_of(h).update("TAG", {"status": "Accepted"})
        monkeypatch.setattr(Database, "delete_auth_cache", refusing)
        assert await h.csms_call(call.ClearCache()) == call_result.ClearCache(status="Rejected")
        assert "TAG" in cache_of(h)


@SCENARIO
async def test_listed_tags_are_never_cached(autojump_clock: Any, tmp_path: Path) -> None:
    keys = {**LIST_KEYS, "LocalPreAuthorize": False, "AuthorizationCacheEnabled": True}
    async with running_station(charger_config(tmp_path), keys=keys) as h:
        await h.booted()
        await present_and_time_out(h, "TAG")
        assert "TAG" in cache_of(h)
        # 3.5.3: once listed, the tag leaves the cache and the answers do not bring it back.
        assert (await h.csms_call(send_local_list(1, FULL, [data("TAG")]))).status == "Accepted"
        assert "TAG" not in cache_of(h)
        await present_and_time_out(h, "TAG")  # without LocalPreAuthorize: the CSMS is asked
        assert h.csms.authorize_count("TAG") == 2
        assert "TAG" not in cache_of(h)


@SCENARIO
async def test_answer_contradicting_the_list_is_a_local_list_conflict(
    autojump_clock: Any, tmp_path: Path
) -> None:
    csms = FakeCsms(id_tags={"TAG": "Blocked"})
    keys = {**LIST_KEYS, "LocalPreAuthorize": False}
    async with running_station(charger_config(tmp_path), csms, keys=keys) as h:
        await h.booted()
        assert (await h.csms_call(send_local_list(1, FULL, [data("TAG")]))).status == "Accepted"
        since = h.csms.mark()
        await h.station.plug(1)
        await h.station.present_id(1, "TAG")
        await h.wait_calls("Authorize", since=since)
        await h.wait_status(0, "Available", error_code="NoError", since=since)
        await trio.sleep(30)
        assert h.connector(1).transaction is None  # online, the central system decides
        assert local_list_of(h).lookup("TAG") == {"status": "Accepted"}  # 3.5.2: unchanged
    zero = [p for p in h.csms.received("StatusNotification", since) if p["connector_id"] == 0]
    assert [(p["status"], p["error_code"], p.get("info")) for p in zero] == [
        ("Available", "LocalListConflict", "idTag TAG"),
        ("Available", "NoError", None),
    ]
    assert h.csms.received("StartTransaction") == []


@SCENARIO
async def test_offline_start_from_the_local_list(autojump_clock: Any, tmp_path: Path) -> None:
    keys = {**LIST_KEYS, "LocalPreAuthorize": False, "LocalAuthorizeOffline": True}
    async with running_station(charger_config(tmp_path), keys=keys) as h:
        await h.booted()
        expiry = (WALL_START + timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
        entries = [data("GOOD"), data("BLOCKED", "Blocked"), data("LAPSING", expiry_date=expiry)]
        assert (await h.csms_call(send_local_list(1, FULL, entries))).status == "Accepted"
        h.network.down = True
        await h.network.drop()
        await trio.sleep(600)  # LAPSING's validity ends meanwhile
        assert h.station.session is not None and not h.station.session.connected
        authorizer = Authorizer(h.station.session)
        assert (await authorizer.authorize("BLOCKED")).status == "Blocked"
        assert (await authorizer.authorize("LAPSING")).status == "Expired"
        assert (await authorizer.authorize("UNKNOWN")).status == "Invalid"
        await h.station.plug(1)
        await h.station.present_id(1, "GOOD")
        await h.wait_machine_status(1, "Charging")
        assert h.relay_closed(1)
    assert h.csms.authorize_count() == 0


@SCENARIO
async def test_start_transaction_answer_contradicting_the_list_is_a_conflict(
    autojump_clock: Any, tmp_path: Path
) -> None:
    csms = FakeCsms(start_statuses={"TAG": "Blocked"})
    async with running_station(charger_config(tmp_path), csms, keys=LIST_KEYS) as h:
        await h.booted()
        assert (await h.csms_call(send_local_list(1, FULL, [data("TAG")]))).status == "Accepted"
        since = h.csms.mark()
        await h.station.plug(1)
        await h.station.present_id(1, "TAG")  # LocalPreAuthorize: started from the list
        await h.wait_status(0, "Available", error_code="LocalListConflict", since=since)
        await h.wait_status(0, "Available", error_code="NoError", since=since)
        assert local_list_of(h).lookup("TAG") == {"status": "Accepted"}
        assert "TAG" not in cache_of(h)
    assert h.csms.authorize_count() == 0
    assert h.csms.received("StartTransaction")[0]["id_tag"] == "TAG"
