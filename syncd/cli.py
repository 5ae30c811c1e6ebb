"""The `syncd` command line: argument parsing, wiring and output. No reconciliation logic lives here."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from syncd import __version__
from syncd.errors import ConfigError, SyncdError
from syncd.model import PairStatus, RunReport

if TYPE_CHECKING:
    from syncd.metrics import Metrics

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


def _config_path(arg: str | None) -> Path:
    return Path(arg or os.environ.get("SYNCD_CONFIG") or "syncd.yaml")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", help="config file (default: $SYNCD_CONFIG, else ./syncd.yaml)")
    common.add_argument(
        "--log-format",
        choices=["auto", "text", "json"],
        help="log lines as text or JSON (default: $SYNCD_LOG_FORMAT, else text on a terminal, JSON otherwise)",
    )
    common.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="default: $SYNCD_LOG_LEVEL, else info (warning for demo, whose report says it all); debug names members",
    )

    parser = argparse.ArgumentParser(
        prog="syncd", description="Keep mailing-provider groups equal to a source of truth."
    )
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    one_shot = argparse.ArgumentParser(add_help=False)  # what run, plan and apply share
    one_shot.add_argument(
        "--detailed-exitcode", action="store_true", help="exit 2 when changes are pending (dry run) or were applied"
    )
    one_shot.add_argument("--metrics-file", metavar="PATH", help="write metrics in node_exporter textfile format")
    one_shot.add_argument("--pushgateway", metavar="URL", help="push metrics to this Prometheus Pushgateway")
    selection = argparse.ArgumentParser(add_help=False)
    selection.add_argument("--group", action="append", default=[], metavar="NAME", help="only this group (repeatable)")
    selection.add_argument(
        "--provider", action="append", default=[], metavar="NAME", help="only this provider (repeatable)"
    )
    selection.add_argument(
        "--allow-mass-removal", action="store_true", help="let removals through that the removal guard would hold back"
    )

    run = sub.add_parser(
        "run",
        parents=[common, one_shot, selection],
        help="one reconciliation pass over every (group, provider) pair",
    )
    run.add_argument("--dry-run", action="store_true", help="plan and report, send nothing that changes anything")
    run.add_argument("--output", "-o", choices=["text", "json"], default="text")

    plan = sub.add_parser(
        "plan", parents=[common, one_shot, selection], help="a dry run whose plan is saved, to apply it later"
    )
    plan.add_argument("-o", "--out", required=True, metavar="PLAN.json", help="where to save the plan")
    plan.add_argument("--output", choices=["text", "json"], default="text", help="the report's format")

    apply = sub.add_parser(
        "apply",
        parents=[common, one_shot],
        help="apply a saved plan; refused, sending nothing, if the sources or provider groups changed since",
    )
    apply.add_argument("plan_file", metavar="PLAN.json")
    apply.add_argument("--output", "-o", choices=["text", "json"], default="text")

    validate = sub.add_parser("validate", parents=[common], help="check the config (offline unless --online)")
    validate.add_argument("--online", action="store_true", help="also check credentials and that bound groups exist")

    history = sub.add_parser("history", parents=[common], help="the per-member ledger from the state DB")
    history.add_argument("--group", metavar="NAME")
    history.add_argument("--provider", metavar="NAME")
    history.add_argument("--member", metavar="EMAIL")
    history.add_argument("--limit", type=_positive_int, default=100, metavar="N", help="the newest N entries (100)")
    history.add_argument("--include-dry-runs", action="store_true", help="also show what dry runs would have done")
    history.add_argument("--output", "-o", choices=["text", "json"], default="text")

    serve = sub.add_parser(
        "serve",
        parents=[common],
        help="the daemon: passes on the config's schedule (the first at start), /metrics, /healthz, /readyz",
        description="Run reconciliation passes on the config's schedule (the first one at start; passes never "
        "overlap) and serve /metrics, /healthz and /readyz on server.listen, until SIGTERM or SIGINT: then the "
        "running pass finishes its requests in flight and is recorded as interrupted, and syncd exits 0.",
    )
    serve.add_argument("--dry-run", action="store_true", help="plan every pass and report drift, change nothing")
    serve.add_argument(
        "--stop-timeout",
        type=float,
        default=30.0,  # syncd.serve.STOP_TIMEOUT (not imported here: it would slow every command's start)
        metavar="SECONDS",
        help="after SIGTERM/SIGINT, exit within this long: the running pass is cancelled if it has not "
        "ended by then (default: 30)",
    )

    sub.add_parser("demo", parents=[common], help="sync example groups into the bundled sandboxes, twice")

    sandbox = sub.add_parser("sandbox", parents=[common], help="serve the bundled provider sandboxes on loopback")
    sandbox.add_argument("--port", type=int, default=8400)
    sandbox.add_argument("--host", default="127.0.0.1")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from syncd.logs import setup_logging

    level = args.log_level or os.environ.get("SYNCD_LOG_LEVEL") or ("warning" if args.command == "demo" else "info")
    setup_logging(args.log_format, level)
    try:
        if args.command in ("run", "plan", "apply"):
            return cmd_one_shot(args)
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "validate":
            return cmd_validate(args)
        if args.command == "history":
            return cmd_history(args)
        if args.command == "demo":
            from syncd.demo import run_demo

            return run_demo(sys.stdout)
        if args.command == "sandbox":
            from syncd.demo import serve_sandboxes

            return serve_sandboxes(args.host, args.port, sys.stdout)
    except ConfigError as exc:
        print(f"syncd: config error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except SyncdError as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("syncd: interrupted", file=sys.stderr)
        return 130
    raise AssertionError(f"unhandled command {args.command}")


# -------------------------------------------------------------------------------------------------- run


def cmd_one_shot(args: argparse.Namespace) -> int:
    """`run`, `plan` and `apply`: one pass (two for apply: check, then apply), a report, an exit code."""
    from syncd.config import load_config
    from syncd.metrics import Metrics
    from syncd.planfile import apply_plan, make_plan
    from syncd.progress import progress_display
    from syncd.reconciler import PassOptions, Reconciler
    from syncd.state import Store

    config = load_config(_config_path(args.config))
    if args.command != "apply":
        _check_selection(config, args.group, args.provider)
    for warning in config.warnings():
        print(f"syncd: warning: {config.path}: {warning}", file=sys.stderr)
    metrics = Metrics()
    store = Store.open(config.state.url)
    progress = progress_display()  # on a terminal only
    try:
        if args.command == "apply":
            coro = apply_plan(config, store, metrics, args.plan_file, progress=progress)
        else:
            options = PassOptions(
                dry_run=args.command == "plan" or args.dry_run,
                groups=frozenset(args.group),
                providers=frozenset(args.provider),
                allow_mass_removal=args.allow_mass_removal,
                trigger=args.command if args.command != "run" else "cli",
            )
            if args.command == "plan":
                coro = make_plan(config, store, metrics, options, args.out, progress=progress)
            else:
                coro = Reconciler(config, store, metrics, progress=progress).run(options)
        report = asyncio.run(coro)
    finally:
        if progress is not None:
            progress.close()
        store.close()
    if args.output == "json":
        print(json.dumps(report.as_dict(), indent=2))
    else:
        render_report(report, sys.stdout)
        if args.command == "plan":
            print(f"  plan saved to {args.out}; apply it with: syncd apply {args.out}")
    _export_metrics(metrics, args)  # after the report: a failed export must not lose it
    return exit_code(report, detailed=args.detailed_exitcode)


def _export_metrics(metrics: Metrics, args: argparse.Namespace) -> None:
    if args.metrics_file:
        metrics.write_textfile(args.metrics_file)  # a SyncdError: one line, exit 1
    if args.pushgateway:
        try:
            metrics.push(args.pushgateway)
        except OSError as exc:
            print(f"syncd: could not push metrics to {args.pushgateway}: {exc}", file=sys.stderr)


def exit_code(report: RunReport, *, detailed: bool) -> int:
    if not report.ok:
        return EXIT_ERROR
    if detailed and report.changed:
        return EXIT_CHANGES
    return EXIT_OK


def _check_selection(config: object, groups: Sequence[str], providers: Sequence[str]) -> None:
    """`--group`/`--provider` naming nothing is a mistake worth stopping for, before contacting anyone."""
    from syncd.config import Config

    assert isinstance(config, Config)
    known_providers = {p.name for p in config.providers}
    for name in providers:
        if name not in known_providers:
            raise ConfigError(
                f"no provider named {name!r} (configured: {', '.join(sorted(known_providers)) or 'none'})",
                file=str(config.path),
                key="--provider",
            )
    known_groups = {name.casefold() for name in config.group_names()}
    # Groups a SQL query names from its rows are known only when it runs: then any name may be one of them.
    for name in [] if config.has_query_named_groups else groups:
        if name.casefold() not in known_groups:
            raise ConfigError(f"no group named {name!r} in the config", file=str(config.path), key="--group")


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
            print(f"  rejected  {p.group} → {p.provider}: {r.email or '(empty)'}: {r.reason}", file=out)
    for p in report.pairs:
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


# ------------------------------------------------------------------------------------------------ serve


def cmd_serve(args: argparse.Namespace) -> int:
    from syncd.config import load_config
    from syncd.progress import progress_display
    from syncd.serve import serve

    config = load_config(_config_path(args.config))
    if args.stop_timeout <= 0:
        raise ConfigError("must be more than 0 seconds", key="--stop-timeout")
    return serve(config, dry_run=args.dry_run, stop_timeout=args.stop_timeout, progress=progress_display())


# --------------------------------------------------------------------------------------------- validate


def cmd_validate(args: argparse.Namespace) -> int:
    from syncd.config import load_config

    config = load_config(_config_path(args.config))
    groups = f"{len(config.group_names())} groups" + (
        " + those SQL queries name" if config.has_query_named_groups else ""
    )
    print(f"{config.path}: ok ({len(config.providers)} providers, {len(config.sources)} sources, {groups})")
    for warning in config.warnings():
        print(f"{config.path}: warning: {warning}")
    if not args.online:
        return EXIT_OK
    from syncd.online import check_online

    problems = asyncio.run(check_online(config, sys.stdout))
    return EXIT_ERROR if problems else EXIT_OK


# ---------------------------------------------------------------------------------------------- history


def cmd_history(args: argparse.Namespace) -> int:
    from syncd.config import load_config
    from syncd.state import Store

    config = load_config(_config_path(args.config))
    store = Store.open(config.state.url)
    try:
        rows = store.history(group=args.group, provider=args.provider, member=args.member, limit=None)
    finally:
        store.close()
    if not args.include_dry_runs:
        rows = [r for r in rows if r.outcome != "would"]
    rows = rows[: args.limit]
    if args.output == "json":
        print(
            json.dumps(
                [
                    {
                        "at": r.at.isoformat(),
                        "run_id": r.run_id,
                        "group": r.group,
                        "provider": r.provider,
                        "email": r.email,
                        "op": r.op,
                        "outcome": str(r.outcome),
                        "reason": r.reason,
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return EXIT_OK
    if not rows:
        print("no ledger entries match")
        return EXIT_OK
    for r in rows:
        print(
            f"{r.at:%Y-%m-%d %H:%M:%S}  {r.run_id[:8]}  {r.group} → {r.provider}  {r.op:<6} {r.outcome!s:<11} "
            f"{r.email}  ({r.reason})"
        )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
