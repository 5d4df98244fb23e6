"""A firmware update's work, version-neutral: download at the retrieve date with retries,
check a signed file's signature, hold the guns, install, reboot; and the status the central
system (TriggerMessage) and the operator (`/api/status`) see.

One plan at a time, persisted (`plan.py`) through the station (`FirmwareHost`): every change
of its phase is written in the same database write as the status notification that tells it,
so a restart at any point neither loses nor repeats a step. `request` answers at once; the
plan runs in the service's own nursery (`run`, in the boot's nursery: a lost connection to the
central system does not end it).

Steps: at the retrieve date (at once when it is past) Downloading, then attempts (retries + 1,
`retry_interval` seconds apart, each within ATTEMPT_TIMEOUT) into `<work_dir>/<name>`;
DownloadFailed only after the last one. Downloaded; the guns are held (idle ones Unavailable,
no new transaction; a running one goes on until it ends); Installing once no gun has a
transaction; then InstallationFailed (the guns released) or the installed version recorded
and the reboot, after which the next boot tells Installed once (`recover`).

A signed update (`Signed`: SignedUpdateFirmware's) reports the whitepaper's statuses with its
request id: DownloadScheduled while its retrieve date is ahead; after Downloaded the
signature is checked (`signature.py`): InvalidSignature (the file removed, the security event
InvalidFirmwareSignature in the same write) or SignatureVerified, then InstallScheduled while
its install date is ahead; the guns are held from the install date on; a file the built-in
installer finds no image is InstallVerificationFailed; InstallRebooting is told with the
recorded install, before the reboot.

A new request before Installing replaces the plan (the running one is cancelled, its files
removed, it reports nothing more); from Installing on it raises FirmwareBusy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import trio
from cryptography import x509

from dcocpp.clock import ocpp_time, parse_ocpp_time
from dcocpp.ocpp.control import FirmwareHost
from dcocpp.ocpp.errors import OcppError
from dcocpp.ocpp.firmware.installer import InstallHook, hook_output, image_version, install
from dcocpp.ocpp.firmware.plan import FirmwarePlan, FirmwareState, Phase, Signed, file_name_of
from dcocpp.ocpp.firmware.signature import check_signing_certificate, verify_signature
from dcocpp.ocpp.transfer import TransferError, discard, download
from dcocpp.ocpp.transfer.urls import parse, redact

log = logging.getLogger(__name__)

# One download attempt may take this long (a server that never answers costs no more).
ATTEMPT_TIMEOUT = 300.0
# retryInterval absent: this many seconds between attempts.
DEFAULT_RETRY_INTERVAL = 60


# What a triggered notification says in each phase of a running plan.
_TRIGGERED = {
    Phase.SCHEDULED: FirmwareState.IDLE,  # nothing is being done yet
    Phase.DOWNLOADING: FirmwareState.DOWNLOADING,
    Phase.DOWNLOADED: FirmwareState.DOWNLOADED,
    Phase.INSTALLING: FirmwareState.INSTALLING,
    Phase.INSTALLED: FirmwareState.INSTALLING,  # recorded, the reboot under way
}
# ... of a signed one: the whitepaper's statuses (VERIFIED: `_current` tells InstallScheduled
# while its install date is ahead).
_TRIGGERED_SIGNED = {
    Phase.SCHEDULED: FirmwareState.DOWNLOAD_SCHEDULED,
    Phase.DOWNLOADING: FirmwareState.DOWNLOADING,
    Phase.DOWNLOADED: FirmwareState.DOWNLOADED,
    Phase.VERIFIED: FirmwareState.SIGNATURE_VERIFIED,
    Phase.INSTALLING: FirmwareState.INSTALLING,
    Phase.INSTALLED: FirmwareState.INSTALL_REBOOTING,
}


class FirmwareBusy(OcppError):
    """A firmware installation is in progress: a new update cannot replace it."""


@attrs.define(eq=False)
class _Job:
    """A running plan, and what the operator sees of it."""

    plan: FirmwarePlan
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    done: trio.Event = attrs.Factory(trio.Event)
    replaced: bool = False
    held: bool = False  # the guns are held for it
    bytes_done: int = 0
    bytes_total: int | None = None
    next_attempt_at: str | None = None
    error: str | None = None
    ended: bool = False


class FirmwareService:
    def __init__(
        self,
        host: FirmwareHost,
        work_dir: Path,
        *,
        version: str,
        hook: InstallHook | None = None,
        ca_bundle: Path | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self._host = host
        self._work_dir = work_dir
        self.version = version  # the firmware running now
        self._hook = hook
        self._ca_bundle = ca_bundle
        self._clock = clock
        self.status = FirmwareState.IDLE  # the last one told to the central system
        self._job: _Job | None = None  # the running plan
        self._last: _Job | None = None  # the running plan, or the last one
        self._pending: FirmwarePlan | None = None  # to resume once `run` runs
        self._nursery: trio.Nursery | None = None

    # --- boot ----------------------------------------------------------------------------------

    async def recover(self, plan: FirmwarePlan | None) -> str | None:
        """At boot, before the session runs, the plan the last run left: an install that
        succeeded is told Installed (with the FirmwareUpdated security event), one cut off
        InstallationFailed, each once, in one write that ends the plan; any other is resumed
        by `run`. Returns what the boot's StartupOfTheDevice event says of it (None: not the
        reboot after an update)."""
        if plan is None:
            return None
        now = ocpp_time(self._clock())
        if plan.phase is Phase.INSTALLED:
            log.info("firmware %s installed: this is its first boot", self.version)
            await self._host.record_firmware(
                None,
                [FirmwareState.INSTALLED],
                request_id=plan.request_id,
                security_event=("FirmwareUpdated", now, f"firmware {self.version} installed"),
            )
            self.status = FirmwareState.INSTALLED
            return f"reboot after the firmware update to {self.version}"
        if plan.phase is Phase.INSTALLING:
            log.error(
                "firmware install of %s was cut off (the process ended during it): its outcome"
                " is unknown, reported InstallationFailed",
                plan.file_name,
            )
            await self._host.record_firmware(
                None, [FirmwareState.INSTALLATION_FAILED], request_id=plan.request_id
            )
            self.status = FirmwareState.INSTALLATION_FAILED
            await self._remove_files(plan.file_name)
            return None
        self._pending = plan
        self.status = self._current(plan)
        return None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hosts the plan until cancelled (resuming the one `recover` left)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self._pending is not None:
                log.info("firmware update resumed (%s)", self._pending.phase.value)
                self._start(self._pending)
                self._pending = None
            task_status.started()
            await trio.sleep_forever()

    # --- the central system's request -------------------------------------------------------------

    @property
    def state(self) -> FirmwareState:
        """What a triggered status notification says: the current step, Idle when nothing is
        being done (no plan, an UpdateFirmware's waiting for its retrieve date, or it
        ended)."""
        return FirmwareState.IDLE if self._job is None else self._current(self._job.plan)

    @property
    def running(self) -> bool:
        """A plan runs (also one waiting for its retrieve or install date)."""
        return self._job is not None

    @property
    def request_id(self) -> int | None:
        """The running plan's request id: a signed update runs (its statuses carry it)."""
        return None if self._job is None else self._job.plan.request_id

    def check_signing_certificate(
        self, signed: Signed, roots: Sequence[x509.Certificate]
    ) -> x509.Certificate:
        """The signing certificate of `signed`, valid now and chained to one of the
        manufacturer `roots`; SigningCertificateRejected (why) otherwise."""
        return check_signing_certificate(signed.signing_certificate, roots, self._clock())

    def _current(self, plan: FirmwarePlan) -> FirmwareState:
        if plan.signed is None:
            return _TRIGGERED[plan.phase]
        if plan.phase is Phase.VERIFIED and self._ahead(plan.signed.install_date) > 0:
            return FirmwareState.INSTALL_SCHEDULED
        return _TRIGGERED_SIGNED[plan.phase]

    def _ahead(self, moment: str | None) -> float:
        """Seconds until `moment` (OCPP dateTime; None or past: 0 or less)."""
        if moment is None:
            return 0.0
        return (parse_ocpp_time(moment) - self._clock()).total_seconds()

    async def request(
        self,
        location: str,
        retrieve_date: datetime,
        *,
        retries: int | None = None,
        retry_interval: int | None = None,
        signed: Signed | None = None,
    ) -> bool:
        """Plan the download of `location` from `retrieve_date` on (a signed update's with
        `signed`, its certificate already checked), replacing a plan not yet installing
        (returns whether it did); FirmwareBusy once one is. A location that cannot be used is
        taken too: its download fails (DownloadFailed), as the central system must hear, after one
        attempt: no retry mends it (and `retries` may be 2**31 with no interval between)."""
        if self._nursery is None:
            raise RuntimeError("FirmwareService.run() must be running")
        old = self._job
        if old is not None and old.plan.phase in (Phase.INSTALLING, Phase.INSTALLED):
            raise FirmwareBusy("a firmware installation is in progress")
        attempts = max(1, (retries or 0) + 1)
        try:
            name = file_name_of(parse(location).path)
        except TransferError:
            name = file_name_of(location)
            attempts = 1
        plan = FirmwarePlan(
            location,
            ocpp_time(retrieve_date.astimezone(UTC)),
            attempts,
            DEFAULT_RETRY_INTERVAL if retry_interval is None else max(0, retry_interval),
            file_name=name,
            signed=signed,
        )
        if old is not None:
            log.info("firmware update replaced by a new request (%s)", old.plan.phase.value)
            old.replaced = True
            old.scope.cancel()
            await old.done.wait()
        told = []
        if signed is not None and self._ahead(plan.retrieve_date) > 0:
            told = [FirmwareState.DOWNLOAD_SCHEDULED]
        await self._host.record_firmware(plan, told, request_id=plan.request_id)
        if told:
            self.status = told[0]
        log.info(
            "%sfirmware update planned: %s at %s, %d attempt(s)",
            "" if signed is None else f"signed (request {signed.request_id}) ",
            redact(location),
            plan.retrieve_date,
            plan.attempts,
        )
        self._start(plan)
        return old is not None

    def _start(self, plan: FirmwarePlan) -> None:
        assert self._nursery is not None
        self._job = self._last = job = _Job(plan)
        self._nursery.start_soon(self._carry_out, job)

    # --- the plan's steps ---------------------------------------------------------------------

    async def _carry_out(self, job: _Job) -> None:
        try:
            with job.scope:
                await self._follow(job)
        finally:
            job.ended = True
            if self._job is job:
                self._job = None
            if job.replaced:
                with trio.CancelScope(shield=True):
                    await self._remove_files(job.plan.file_name)
                    if job.held:
                        await self._host.hold_for_firmware(False)
            job.done.set()

    async def _follow(self, job: _Job) -> None:
        if job.plan.phase is Phase.SCHEDULED:
            await self._wait_for_retrieve_date(job)
            await self._record(
                job,
                attrs.evolve(job.plan, phase=Phase.DOWNLOADING, attempt=1),
                FirmwareState.DOWNLOADING,
            )
        if job.plan.phase is Phase.DOWNLOADING:
            if not await self._download(job):
                await self._remove_files(job.plan.file_name)
                await self._record(job, None, FirmwareState.DOWNLOAD_FAILED)
                return
            target = self._target(job.plan)
            version = await trio.to_thread.run_sync(image_version, target)
            downloaded = attrs.evolve(job.plan, phase=Phase.DOWNLOADED, expected_version=version)
            log.info("firmware %s downloaded (version %s)", target.name, version or "unknown")
            await self._record(job, downloaded, FirmwareState.DOWNLOADED)
        signed = job.plan.signed
        unchecked = job.plan.phase is Phase.DOWNLOADED
        if signed is not None and unchecked and not await self._verify(job, signed):
            return
        if job.plan.phase in (Phase.DOWNLOADED, Phase.VERIFIED):
            if job.plan.signed is not None:
                await self._wait_for_install_date(job.plan.signed)
            job.held = True
            await self._host.hold_for_firmware(True)
            log.info("firmware install waits for every transaction to end")
            await self._host.wait_no_transaction()
            await self._record(
                job, attrs.evolve(job.plan, phase=Phase.INSTALLING), FirmwareState.INSTALLING
            )
        await self._install(job)

    async def _verify(self, job: _Job, signed: Signed) -> bool:
        """Check the downloaded file's signature: SignatureVerified (and InstallScheduled when
        the install date is ahead) in one write, or InvalidSignature with its security event,
        the file removed (False)."""
        target = self._target(job.plan)
        problem = await trio.to_thread.run_sync(
            verify_signature, target, signed.signing_certificate, signed.signature
        )
        if problem is not None:
            job.error = f"invalid signature: {problem}"
            log.error("firmware %s not installed: %s", target.name, job.error)
            await self._remove_files(job.plan.file_name)
            now = ocpp_time(self._clock())
            await self._record(
                job,
                None,
                FirmwareState.INVALID_SIGNATURE,
                security_event=("InvalidFirmwareSignature", now, f"{target.name}: {problem}"),
            )
            return False
        told = [FirmwareState.SIGNATURE_VERIFIED]
        if self._ahead(signed.install_date) > 0:
            told.append(FirmwareState.INSTALL_SCHEDULED)
        log.info("firmware %s: signature verified", target.name)
        await self._record(job, attrs.evolve(job.plan, phase=Phase.VERIFIED), *told)
        return True

    async def _wait_for_install_date(self, signed: Signed) -> None:
        delay = self._ahead(signed.install_date)
        if delay > 0:
            log.info("firmware install waits until %s", signed.install_date)
            await trio.sleep(delay)

    async def _wait_for_retrieve_date(self, job: _Job) -> None:
        delay = (parse_ocpp_time(job.plan.retrieve_date) - self._clock()).total_seconds()
        if delay > 0:
            log.info("firmware download waits until %s", job.plan.retrieve_date)
            job.next_attempt_at = job.plan.retrieve_date
            await trio.sleep(delay)
            job.next_attempt_at = None

    async def _download(self, job: _Job) -> bool:
        """Attempts from the plan's until one succeeds (True) or the last failed (False);
        each attempt's number is persisted as it begins."""

        def progress(done: int, total: int | None) -> None:
            job.bytes_done, job.bytes_total = done, total

        plan = job.plan
        target = self._target(plan)
        shown = redact(plan.location)
        await trio.Path(self._work_dir).mkdir(parents=True, exist_ok=True)
        for attempt in range(max(1, plan.attempt), plan.attempts + 1):
            if attempt != job.plan.attempt:
                await self._record(job, attrs.evolve(job.plan, attempt=attempt))
            job.next_attempt_at = None
            log.info("downloading firmware %s (attempt %d of %d)", shown, attempt, plan.attempts)
            with trio.move_on_after(ATTEMPT_TIMEOUT) as deadline:
                try:
                    await download(
                        plan.location, target, ca_bundle=self._ca_bundle, progress=progress
                    )
                except TransferError as exc:
                    job.error = str(exc)
                else:
                    job.error = None
                    return True
            if deadline.cancelled_caught:
                job.error = f"no answer within {ATTEMPT_TIMEOUT:g} s"
            if attempt < plan.attempts:
                job.next_attempt_at = ocpp_time(
                    self._clock() + timedelta(seconds=plan.retry_interval)
                )
                log.warning(
                    "firmware download attempt %d of %d failed: %s; next in %d s",
                    attempt,
                    plan.attempts,
                    job.error,
                    plan.retry_interval,
                )
                await trio.sleep(plan.retry_interval)
        log.error(
            "firmware download of %s failed after %d attempt(s): %s",
            shown,
            plan.attempts,
            job.error,
        )
        return False

    async def _install(self, job: _Job) -> None:
        target = self._target(job.plan)
        log.info("installing firmware %s", target.name)
        outcome = await install(target, self._hook)
        await self._remove_files(job.plan.file_name)
        if outcome.error is not None:
            job.error = outcome.error
            log.error("firmware install failed: %s", outcome.error)
            failed = FirmwareState.INSTALLATION_FAILED
            if job.plan.signed is not None and outcome.verification_failed:
                failed = FirmwareState.INSTALL_VERIFICATION_FAILED
            await self._record(job, None, failed)
            job.held = False
            await self._host.hold_for_firmware(False)
            return
        version = outcome.version
        # A signed update tells the reboot to come (the whitepaper's InstallRebooting).
        rebooting = [] if job.plan.signed is None else [FirmwareState.INSTALL_REBOOTING]
        await self._record(
            job, attrs.evolve(job.plan, phase=Phase.INSTALLED), *rebooting, version=version
        )
        log.warning(
            "firmware %s installed: rebooting into it", version or "(version not told by the image)"
        )
        await self._host.reboot_for_firmware()

    async def _record(
        self,
        job: _Job,
        plan: FirmwarePlan | None,
        *statuses: FirmwareState,
        version: str | None = None,
        security_event: tuple[str, str, str | None] | None = None,
    ) -> None:
        """One write: the plan's change and the statuses telling it (with a signed update's
        request id; and the version, a security event)."""
        await self._host.record_firmware(
            plan,
            statuses,
            request_id=job.plan.request_id,
            version=version,
            security_event=security_event,
        )
        if plan is not None:
            job.plan = plan
        if statuses:
            self.status = statuses[-1]

    def _target(self, plan: FirmwarePlan) -> Path:
        return self._work_dir / plan.file_name

    async def _remove_files(self, file_name: str) -> None:
        """The downloaded file, what a download left to resume, an install hook's output."""
        target = self._work_dir / file_name
        try:
            await discard(target)
            await trio.Path(target).unlink(missing_ok=True)
            await trio.Path(hook_output(target)).unlink(missing_ok=True)
        except (TransferError, OSError) as exc:
            log.error("firmware file %s not removed: %s", target, exc)

    # --- the operator's view ------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """For the local API: the last status told, the running version, and the plan under
        way (or the last one), its location without credentials."""
        job = self._last
        update = None
        if job is not None:
            plan = job.plan
            total = job.bytes_total
            update = {
                "location": redact(plan.location),
                "retrieveDate": plan.retrieve_date,
                "phase": "ended" if job.ended else plan.phase.value,
                "attempt": plan.attempt,
                "attempts": plan.attempts,
                "bytesDone": job.bytes_done,
                "bytesTotal": total,
                "percent": round(100 * job.bytes_done / total, 1) if total else None,
                "nextAttemptAt": job.next_attempt_at,
                "error": job.error,
                "fileName": plan.file_name,
                "requestId": plan.request_id,  # a signed update's
                "installDate": None if plan.signed is None else plan.signed.install_date,
            }
        return {"status": self.status.value, "version": self.version, "update": update}
