"""Renders a pass's report for people: the table, the rejects, the drift, the errors, one closing line.

`syncd run`, `plan`, `apply` and `syncd demo` print the same thing, so it lives here, not in the CLI. What
each status means is written once, in the README ("Statuses and exit codes"), and in `PairStatus`.

Also what the state DB says for the operator: `syncd status` (where each pair stands after its last pass, as a
table, coloured on a terminal, or the JSON the HTTP API serves too) and `syncd rejects` (the remembered permanent
rejects: a table, JSON or CSV). They take the store's records through the protocols below (this layer does not
import the state package).
"""

from __future__ import annotations

import csv
import shlex
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from syncd.model import PairResult, PairStatus, RunReport

__all__ = [
    "RejectEntry",
    "StatusEntry",
    "rejects_as_dict",
    "render_rejects",
    "render_report",
    "render_status",
    "short_time",
    "status_as_dict",
    "write_rejects_csv",
]

_HEADER = ("GROUP", "PROVIDER", "STRATEGY", "ADD", "REMOVE", "REJECTED", "STATUS", "REQUESTS")
_RIGHT = {3, 4, 5}  # the counts are right-aligned


def render_report(report: RunReport, out: TextIO) -> None:
    for line in _lines(report):
        print(line, file=out)


def _lines(report: RunReport) -> Iterator[str]:
    yield f"syncd {'dry run' if report.dry_run else 'run'} {report.run_id[:8]}"
    yield from _table(report.pairs)
    for p in report.pairs:
        yield from _rejected(p)
    for p in report.pairs:
        yield from _notes(p)
    for e in report.errors:
        yield f"  error     {e}"
    yield _summary(report)


def _table(pairs: tuple[PairResult, ...]) -> Iterator[str]:
    if not pairs:  # no table of nothing
        yield "  no (group, provider) pairs selected"
        return
    rows = [_HEADER, *(_row(p) for p in pairs)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADER))]
    for row in rows:
        cells = [c.rjust(w) if i in _RIGHT else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        yield "  " + "  ".join(cells).rstrip()


def _row(p: PairResult) -> tuple[str, ...]:
    remove = f"-{p.remove}" + (f" ({p.unsupported_remove} unsupported)" if p.unsupported_remove else "")
    requests = f"{p.requests['read']}r/{p.requests['write']}w"
    return (p.group, p.provider, str(p.strategy), f"+{p.add}", remove, str(len(p.rejected)), str(p.status), requests)


def _rejected(p: PairResult) -> Iterator[str]:
    for r in p.rejected:
        why = r.detail or r.reason  # the longer account where there is one (who unsubscribed, when)
        yield f"  rejected  {p.group} → {p.provider}: {r.email or '(empty)'}: {why}"


def _notes(p: PairResult) -> Iterator[str]:
    """What needs a reader's attention about one pair: adds a dry run cannot check, drift the API cannot remove,
    removals held back, an error."""
    if p.unchecked_add:
        yield (
            f"  unchecked {p.group} → {p.provider}: the {p.unchecked_add} adds above are not checked: "
            f"{p.provider} takes only addresses it has a record for, and tells which only when they are added"
        )
    if p.unsupported_remove:
        noun = "member" if p.unsupported_remove == 1 else "members"
        yield (
            f"  drift     {p.group} → {p.provider}: {p.unsupported_remove} {noun} should leave, but "
            f"{p.provider}'s API cannot remove members: remove them there by hand "
            f"(syncd history --group {shlex.quote(p.group)} --provider {p.provider} names them)"
        )
    if p.status is PairStatus.BLOCKED:
        yield (
            f"  blocked   {p.group} → {p.provider}: {p.held_back} removals held back: {p.guard}. If they are "
            f"right: syncd approve {shlex.quote(p.group)} --provider {p.provider} --reason '…' (once), or raise "
            "safety.max_removals / max_removal_ratio."
        )
    if p.error:
        yield f"  error     {p.group} → {p.provider}: {p.error}"


def _summary(report: RunReport) -> str:
    pending = sum(p.add + p.remove for p in report.pairs)
    created = report.groups_created
    would = " would be" if report.dry_run else ""
    parts = [f"{pending} member changes{would} made"] if pending else []
    if created:  # a group created empty changes no member, yet is a change
        parts.append(f"{created} empty group{'s' if created != 1 else ''}{would} created")
    if parts:
        return f"  {', and '.join(parts)}."
    return "  nothing to change." if report.dry_run else "  nothing changed."


# ------------------------------------------------------------------------------------------ syncd status


class StatusEntry(Protocol):
    """Where a pair stands after its last pass (`syncd.state.records.PairState`)."""

    @property
    def group(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def dry_run(self) -> bool: ...
    @property
    def last_run(self) -> datetime: ...
    @property
    def status(self) -> PairStatus: ...
    @property
    def desired(self) -> int: ...
    @property
    def actual(self) -> int | None: ...
    @property
    def pending_add(self) -> int | None: ...
    @property
    def pending_remove(self) -> int | None: ...
    @property
    def rejected(self) -> int: ...
    @property
    def blocked_reason(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...


_STATUS_HEADER = ("GROUP", "PROVIDER", "STATUS", "LAST PASS", "DESIRED", "ACTUAL", "PENDING", "REJECTED", "WHY BLOCKED")
_STATUS_RIGHT = {4, 5, 7}  # the counts
_STATUS_COLUMN = 2
_GREEN, _YELLOW, _RED = "32", "33", "31"  # SGR colour codes
_COLOURS = {
    PairStatus.IN_SYNC: _GREEN,
    PairStatus.APPLIED: _GREEN,
    PairStatus.PENDING: _YELLOW,
    PairStatus.BLOCKED: _RED,
    PairStatus.PARTIAL: _RED,
    PairStatus.FAILED: _RED,
}


def status_as_dict(entries: Sequence[StatusEntry]) -> dict[str, Any]:
    """`syncd status -o json`: `{"pairs": [...]}`, `last_run` in ISO 8601."""
    return {"pairs": [status_entry_as_dict(e) for e in entries]}


STATUS_KEYS = (
    "group",
    "provider",
    "status",
    "last_run",
    "desired",
    "actual",
    "pending_add",
    "pending_remove",
    "rejected",
    "blocked_reason",
)


def status_entry_as_dict(e: StatusEntry) -> dict[str, Any]:
    """One pair of `syncd status -o json` (and of the HTTP API's `/api/v1/pairs`), keys in `STATUS_KEYS` order."""
    return {
        "group": e.group,
        "provider": e.provider,
        "status": str(e.status),
        "last_run": e.last_run.isoformat(),
        "desired": e.desired,
        "actual": e.actual,
        "pending_add": e.pending_add,
        "pending_remove": e.pending_remove,
        "rejected": e.rejected,
        "blocked_reason": e.blocked_reason,
    }


def render_status(
    entries: Sequence[StatusEntry], out: TextIO, *, now: datetime, colour: bool = False, empty: str = ""
) -> None:
    """The pairs as a table read at a glance (the status coloured when `colour`), then the errors of failed
    pairs; `empty` (or a sentence saying no pair has had a pass) when there is none."""
    if not entries:
        print(empty or "no pair has had a pass yet", file=out)
        return
    rows = [_STATUS_HEADER, *_status_rows(entries, now)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_STATUS_HEADER))]
    for n, row in enumerate(rows):
        cells = []
        for i, (cell, width) in enumerate(zip(row, widths, strict=True)):
            padded = cell.rjust(width) if i in _STATUS_RIGHT else cell.ljust(width)
            if colour and n and i == _STATUS_COLUMN:
                padded = _paint(cell, _COLOURS[entries[n - 1].status]) + padded[len(cell) :]
            cells.append(padded)
        print("  ".join(cells).rstrip(), file=out)
    for e in entries:
        if e.error:
            print(f"error: {e.group} → {e.provider}: {e.error}", file=out)


def _status_rows(entries: Sequence[StatusEntry], now: datetime) -> list[tuple[str, ...]]:
    adds = [f"+{e.pending_add}" for e in entries if e.pending_add is not None]
    removes = [f"-{e.pending_remove}" for e in entries if e.pending_remove is not None]
    add_width = max(map(len, adds), default=0)
    remove_width = max(map(len, removes), default=0)
    rows: list[tuple[str, ...]] = []
    for e in entries:
        if e.pending_add is None or e.pending_remove is None:
            pending = "?"  # not known: a pass from before syncd kept it, or one that never read the group
        else:
            pending = f"+{e.pending_add}".rjust(add_width) + " " + f"-{e.pending_remove}".rjust(remove_width)
        rows.append(
            (
                e.group,
                e.provider,
                str(e.status),
                short_time(e.last_run, now) + (" (dry run)" if e.dry_run else ""),
                str(e.desired),
                "?" if e.actual is None else str(e.actual),
                pending,
                str(e.rejected),
                e.blocked_reason or "",
            )
        )
    return rows


def _paint(text: str, sgr: str) -> str:
    return f"\x1b[{sgr}m{text}\x1b[0m"


def short_time(when: datetime, now: datetime) -> str:
    """A time as a table shows it: how long ago within the last day ("just now", "12m ago", "5h ago"), else the
    UTC date and time ("2026-12-05 09:30")."""
    seconds = (now - when).total_seconds()
    if -60 < seconds < 60:  # a clock a little ahead is "just now" too
        return "just now"
    if 0 < seconds < 3600:
        return f"{int(seconds // 60)}m ago"
    if 0 < seconds < 86400:
        return f"{int(seconds // 3600)}h ago"
    return f"{when.astimezone(UTC):%Y-%m-%d %H:%M}"


# ----------------------------------------------------------------------------------------- syncd rejects


class RejectEntry(Protocol):
    """A remembered permanent reject (`syncd.state.records.RejectRow`)."""

    @property
    def provider(self) -> str: ...
    @property
    def group(self) -> str: ...  # '' = every group of the provider
    @property
    def email(self) -> str: ...
    @property
    def code(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def first_seen(self) -> datetime: ...
    @property
    def last_seen(self) -> datetime: ...


_REJECT_FIELDS = ("provider", "group", "email", "code", "reason", "first_seen", "last_seen")
_REJECTS_HEADER = ("PROVIDER", "GROUP", "EMAIL", "CODE", "FIRST SEEN", "LAST SEEN", "REASON")
EVERY_GROUP = "(every group)"  # how the text table shows group '' (remembered before rejects were kept per group)


def _reject_values(r: RejectEntry) -> tuple[str, ...]:
    return (r.provider, r.group, r.email, r.code, r.reason, r.first_seen.isoformat(), r.last_seen.isoformat())


def rejects_as_dict(entries: Sequence[RejectEntry]) -> dict[str, Any]:
    """`syncd rejects -o json`: `{"rejects": [{"provider", "group", "email", "code", "reason", "first_seen",
    "last_seen"}]}`, times in ISO 8601, group '' for a reject remembered for every group of its provider."""
    return {"rejects": [dict(zip(_REJECT_FIELDS, _reject_values(r), strict=True)) for r in entries]}


def write_rejects_csv(entries: Sequence[RejectEntry], out: TextIO) -> None:
    """`syncd rejects -o csv`: a header row, then one row per reject, the fields of the JSON in its order."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_REJECT_FIELDS)
    writer.writerows(_reject_values(r) for r in entries)


def render_rejects(entries: Sequence[RejectEntry], out: TextIO, *, empty: str = "") -> None:
    """The rejects as a table, oldest first as given; times in UTC to the minute."""
    if not entries:
        print(empty or "no remembered rejects", file=out)
        return
    rows = [
        _REJECTS_HEADER,
        *(
            (
                r.provider,
                r.group or EVERY_GROUP,
                r.email,
                r.code,
                f"{r.first_seen.astimezone(UTC):%Y-%m-%d %H:%M}",
                f"{r.last_seen.astimezone(UTC):%Y-%m-%d %H:%M}",
                r.reason,
            )
            for r in entries
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_REJECTS_HEADER))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)
