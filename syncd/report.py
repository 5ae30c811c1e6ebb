"""Renders a pass's report for people: the table, the rejects, the drift, the errors, one closing line.

`syncd run`, `plan`, `apply` and `syncd demo` print the same thing, so it lives here, not in the CLI. What
each status means is written once, in the README ("Statuses and exit codes"), and in `PairStatus`.
"""

from __future__ import annotations

import shlex
from typing import TextIO

from syncd.model import PairStatus, RunReport

__all__ = ["render_report"]


def render_report(report: RunReport, out: TextIO) -> None:
    title = f"syncd {'dry run' if report.dry_run else 'run'} {report.run_id[:8]}"
    print(title, file=out)
    if not report.pairs:
        print("  no (group, provider) pairs selected", file=out)
    rows: list[tuple[str, ...]] = [("GROUP", "PROVIDER", "STRATEGY", "ADD", "REMOVE", "REJECTED", "STATUS", "REQUESTS")]
    for p in report.pairs:
        add = f"+{p.add}"
        remove = f"-{p.remove}" + (f" ({p.unsupported_remove} unsupported)" if p.unsupported_remove else "")
        rows.append(
            (
                p.group,
                p.provider,
                str(p.strategy),
                add,
                remove,
                str(len(p.rejected)),
                str(p.status),
                f"{p.requests['read']}r/{p.requests['write']}w",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    right = {3, 4, 5}
    for row in rows if report.pairs else []:  # no table of nothing
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        print("  " + "  ".join(cells).rstrip(), file=out)
    for p in report.pairs:
        for r in p.rejected:
            why = r.detail or r.reason  # the longer account where there is one (who unsubscribed, when)
            print(f"  rejected  {p.group} → {p.provider}: {r.email or '(empty)'}: {why}", file=out)
    for p in report.pairs:
        if p.unchecked_add:
            print(
                f"  unchecked {p.group} → {p.provider}: the {p.unchecked_add} adds above are not checked: "
                f"{p.provider} takes only addresses it has a record for, and tells which only when they are added",
                file=out,
            )
        if p.unsupported_remove:
            noun = "member" if p.unsupported_remove == 1 else "members"
            print(
                f"  drift     {p.group} → {p.provider}: {p.unsupported_remove} {noun} should leave, but "
                f"{p.provider}'s API cannot remove members: remove them there by hand "
                f"(syncd history --group {shlex.quote(p.group)} --provider {p.provider} names them)",
                file=out,
            )
        if p.status is PairStatus.BLOCKED:
            print(
                f"  blocked   {p.group} → {p.provider}: {p.held_back} removals held back: {p.guard}. "
                "Re-run with --allow-mass-removal, or raise safety.max_removals / max_removal_ratio.",
                file=out,
            )
        if p.error:
            print(f"  error     {p.group} → {p.provider}: {p.error}", file=out)
    for e in report.errors:
        print(f"  error     {e}", file=out)
    pending = sum(p.add + p.remove for p in report.pairs)
    created = report.groups_created
    would = " would be" if report.dry_run else ""
    parts = [f"{pending} member changes{would} made"] if pending else []
    if created:  # a group created empty changes no member, yet is a change
        parts.append(f"{created} empty group{'s' if created != 1 else ''}{would} created")
    if parts:
        print(f"  {', and '.join(parts)}.", file=out)
    else:
        print("  nothing to change." if report.dry_run else "  nothing changed.", file=out)
