"""Switching the OCPP security profile (1.6 security whitepaper, section 2.4): what a higher
profile needs before it is accepted, the URL it connects to, and the fallback when it cannot.

A profile set by the central system is persisted in `<dataDir>/security-profile.json` before
it is accepted: ``{"profile": 2, "previous": 1}`` while it is being tried, ``{"profile": 2,
"previous": null}`` once a connection with it has opened. Profiles 2 and 3 connect to the
configured URL with the scheme `wss://` (same host, port, path and query); 0 and 1 to the
configured URL as it is. A profile being tried that fails FALLBACK_ATTEMPTS connection attempts
in a row gives way to the previous one, and stays recorded as the latest fallback for the
operator. Without the file (no profile ever set over OCPP) the connection follows the
configuration alone.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import attrs

from dcocpp.storage.atomicfile import replace_file

__all__ = ["FALLBACK_ATTEMPTS", "STATE_FILE", "Fallback", "SecurityProfiles", "refusal"]

log = logging.getLogger(__name__)

STATE_FILE = "security-profile.json"
# Connection attempts a new profile gets before the previous one comes back. libocpp gives it
# one; three ride out a central system that restarts its TLS listener, and with the reconnect
# backoff (1 s doubling) the charger is back on the old profile within seconds.
FALLBACK_ATTEMPTS = 3


@attrs.frozen
class Fallback:
    """A profile that could not connect, and the one the charger went back to."""

    failed: int
    restored: int
    reason: str  # the last attempt's failure
    at: str  # OCPP dateTime


def refusal(
    new: int,
    *,
    current: int,
    authorization_key: bool,
    csms_root: bool,
    client_certificate: bool,
) -> str | None:
    """Why the charger may not move to profile `new` from `current`, or None. Lower or the
    same is refused (the whitepaper allows no way down: anyone on the path could otherwise
    weaken the connection); so is a profile whose credentials are missing."""
    if not 0 <= new <= 3:
        return "there are profiles 0 to 3"
    if new <= current:
        return f"it is not above the profile in use ({current})"
    if new in (1, 2) and not authorization_key:
        return "no AuthorizationKey is set (Basic auth)"
    if new in (2, 3) and not csms_root:
        return "no CentralSystemRootCertificate is installed (nor a csmsCaBundle configured)"
    if new == 3 and not client_certificate:
        return "the charge point has no valid certificate (TLS client certificate)"
    return None


def profile_url(base: str, profile: int | None) -> str:
    """The URL a profile connects to: `wss://` for 2 and 3, the configured one otherwise."""
    parts = urlsplit(base)
    if profile is None or profile < 2 or parts.scheme == "wss":
        return base
    return urlunsplit(("wss", parts.netloc, parts.path, parts.query, parts.fragment))


class SecurityProfiles:
    """The profile the central system set (None: never), persisted at `path` (None: in
    memory only); a profile on trial (`previous` is set) is confirmed by a connection, or
    replaced by the previous one after FALLBACK_ATTEMPTS failed attempts."""

    def __init__(self, path: Path | None = None):
        self._path = path
        self.profile: int | None = None
        self.previous: int | None = None
        self.failures = 0  # failed attempts of the profile on trial
        self.last_fallback: Fallback | None = None

    def load(self) -> None:
        """Read the file; one that cannot be read is logged and the configuration alone
        decides (as before any profile was set)."""
        if self._path is None or not self._path.exists():
            return
        try:
            document = json.loads(self._path.read_text(encoding="utf-8"))
            profile, previous = document["profile"], document.get("previous")
            if not (isinstance(profile, int) and 0 <= profile <= 3):
                raise ValueError(f"profile {profile!r} is not 0 to 3")
            if previous is not None and not (isinstance(previous, int) and 0 <= previous <= 3):
                raise ValueError(f"previous {previous!r} is not 0 to 3")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error(
                "%s cannot be read (%s): the configuration decides the profile", self._path, exc
            )
            return
        self.profile, self.previous = profile, previous

    def url(self, base: str) -> str:
        return profile_url(base, self.profile)

    @property
    def on_trial(self) -> bool:
        return self.previous is not None

    def switch(self, new: int, current: int) -> None:
        """Try `new` from the next connection on, with `current` to fall back to. Raises
        OSError when it cannot be persisted (nothing changes)."""
        self._save(new, current)
        self.profile, self.previous, self.failures = new, current, 0

    def connected(self) -> tuple[int, int] | None:
        """A connection opened: a profile on trial is confirmed; returns (previous, new)."""
        if self.previous is None or self.profile is None:
            return None
        confirmed = (self.previous, self.profile)
        self._persist(self.profile, None)
        self.previous, self.failures = None, 0
        return confirmed

    def attempt_failed(self, reason: str, at: str) -> Fallback | None:
        """A connection attempt failed; the fallback when this was the trial's last one."""
        if self.previous is None or self.profile is None:
            return None
        self.failures += 1
        if self.failures < FALLBACK_ATTEMPTS:
            return None
        fallback = Fallback(failed=self.profile, restored=self.previous, reason=reason, at=at)
        self._persist(self.previous, None)
        self.profile, self.previous, self.failures = fallback.restored, None, 0
        self.last_fallback = fallback
        return fallback

    def _persist(self, profile: int, previous: int | None) -> None:
        try:
            self._save(profile, previous)
        except OSError as exc:
            # In force for this run; a restart goes on from what the file holds.
            log.error("SecurityProfile %d not stored in %s: %s", profile, self._path, exc)

    def _save(self, profile: int, previous: int | None) -> None:
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            replace_file(self._path, json.dumps({"profile": profile, "previous": previous}) + "\n")
