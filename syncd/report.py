"""Renders a pass's report for people: the table, the rejects, the drift, the errors, one closing line.

`syncd run`, `plan`, `apply` and `syncd demo` print the same thing, so it lives here, not in the CLI. What
each status means is written once, in the README ("Statuses and exit codes"), and in `PairStatus`.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from typing import TextIO

from syncd.model import PairResult, PairStatus, RunReport

__all__ = ["render_report"]

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
            f"  blocked   {p.group} → {p.provider}: {p.held_back} removals held back: {p.guard}. "
            "Re-run with --allow-mass-removal, or raise safety.max_removals / max_removal_ratio."
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
