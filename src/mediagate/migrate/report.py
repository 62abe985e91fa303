"""Outcomes of a run: counted for the summary, shown on a progress bar or logged line by line."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Never

import structlog
from tqdm import tqdm

from mediagate.migrate.plan import Import, Job, Move, Plan, printable

log = structlog.get_logger("mediagate.migrate")


class Status(StrEnum):
    MIGRATED = "migrated"
    IMPORTED = "imported"
    LOCAL_COPY_DELETED = "local copy deleted"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class Outcome:
    status: Status
    detail: str = ""
    size: int = 0
    local_copy_deleted: bool = False


@dataclass
class Summary:
    migrated: int = 0
    imported: int = 0
    local_copies_deleted: int = 0
    skipped: int = 0
    failed: int = 0
    bytes: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    failures: list[dict[str, str]] = field(default_factory=list)
    skips: list[dict[str, str]] = field(default_factory=list)
    _started: float = field(default_factory=time.monotonic, repr=False)

    def record(self, item: str, outcome: Outcome) -> None:
        match outcome.status:
            case Status.MIGRATED:
                self.migrated += 1
            case Status.IMPORTED:
                self.imported += 1
            case Status.SKIPPED:
                self.skipped += 1
                self.skips.append({"item": item, "reason": outcome.detail})
            case Status.FAILED:
                self.failed += 1
                self.failures.append({"item": item, "error": outcome.detail})
        self.bytes += outcome.size
        if outcome.status is Status.LOCAL_COPY_DELETED or outcome.local_copy_deleted:
            self.local_copies_deleted += 1

    def stop(self) -> None:
        self.seconds = time.monotonic() - self._started

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    @property
    def mib_per_s(self) -> float:
        """The rate the text report gives (IEC, as every size mediagate prints)."""
        return self.bytes / 1024**2 / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failed else 0

    def as_json(self) -> dict[str, Any]:
        return {
            "migrated": self.migrated,
            "imported": self.imported,
            "local_copies_deleted": self.local_copies_deleted,
            "skipped": self.skipped,
            "failed": self.failed,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "mb_per_s": round(self.mb_per_s, 1),
            "interrupted": self.interrupted,
            "failures": self.failures,
            "skips": self.skips,
        }

    def as_text(self) -> str:
        lines = [
            f"{'interrupted' if self.interrupted else 'done'}: migrated {self.migrated}, "
            f"imported {self.imported}, {human_bytes(self.bytes)} in {self.seconds:.1f} s "
            f"({self.mib_per_s:.1f} MiB/s); local copies deleted {self.local_copies_deleted}; "
            f"skipped {self.skipped}{reason_counts(self.skips)}; failed {self.failed}"
        ]
        lines += [f"failed: {failure['item']}: {failure['error']}" for failure in self.failures]
        return "\n".join(lines)


def reason_counts(skips: list[dict[str, str]]) -> str:
    counts = Counter(skip["reason"] for skip in skips)
    return f" ({', '.join(f'{reason}: {n}' for reason, n in counts.items())})" if counts else ""


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def plan_as_json(plan: Plan, bucket: str) -> dict[str, Any]:
    return {
        "dry_run": True,
        "bucket": bucket,
        "files": len(plan.uploads),
        "bytes": plan.upload_bytes,
        "local_copies_to_delete": len(plan.jobs) - len(plan.uploads),
        "skipped": len(plan.skipped),
        "jobs": [
            {
                "action": action(job),
                "media_id": job.media.id,
                "user_id": job.media.user_id,
                "key": job.media.key,
                "size": job.media.size,
                "path": printable(job.path),
            }
            for job in plan.jobs
        ],
        "skips": [{"item": skip.item, "reason": skip.reason} for skip in plan.skipped],
    }


def plan_as_text(plan: Plan, bucket: str) -> str:
    lines = [
        f"dry run: would copy {len(plan.uploads)} files ({human_bytes(plan.upload_bytes)}) "
        f"into s3://{bucket}, delete {len(plan.jobs) - len(plan.uploads)} local copies, "
        f"skip {len(plan.skipped)}; nothing was changed"
    ]
    for job in plan.jobs:
        target = f" -> {job.media.key}" if isinstance(job, Import) else ""
        lines.append(f"  {action(job):<17} {job.label}{target}  {human_bytes(job.media.size)}")
    lines += [f"  {'skip':<17} {skip.item}  ({skip.reason})" for skip in plan.skipped]
    return "\n".join(lines)


def action(job: Job) -> str:
    if isinstance(job, Move):
        return "move"
    if isinstance(job, Import):
        return "import"
    return "delete local copy"


class Report:
    """Where a run's events go: the summary, a progress bar on a terminal, the log."""

    def __init__(self, summary: Summary, *, show_bar: bool = False) -> None:
        self.summary = summary
        self._show_bar = show_bar
        self._bar: tqdm[Never] | None = None
        self._files = 0
        self._done = 0

    def start(self, plan: Plan) -> None:
        for skip in plan.skipped:
            self._record(skip.item, Outcome(Status.SKIPPED, skip.reason))
        self._files = len(plan.jobs)
        if self._show_bar:
            self._bar = tqdm(
                total=plan.upload_bytes,
                unit="B",
                unit_scale=True,
                desc="migrate",
                dynamic_ncols=True,
                postfix=f"files 0/{self._files}",
            )

    def sent(self, size: int) -> None:
        if self._bar is not None:
            self._bar.update(size)

    def finished(self, item: str, outcome: Outcome) -> None:
        self._record(item, outcome)
        self._done += 1
        if self._bar is not None:
            self._bar.set_postfix_str(f"files {self._done}/{self._files}")

    def _record(self, item: str, outcome: Outcome) -> None:
        self.summary.record(item, outcome)
        if outcome.status is Status.FAILED:
            log.warning("migrate.failed", item=item, error=outcome.detail)
            return
        details: dict[str, object] = {"size": outcome.size} if outcome.size else {}
        if outcome.detail:
            details["detail"] = outcome.detail
        if outcome.local_copy_deleted:
            details["local_copy_deleted"] = True
        log.info("migrate." + outcome.status.value.replace(" ", "_"), item=item, **details)

    def close(self) -> None:
        self.summary.stop()
        if self._bar is not None:
            self._bar.close()
