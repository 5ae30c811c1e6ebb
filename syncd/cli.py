"""The `syncd` command line: argument parsing, wiring and output. No reconciliation logic lives here."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from syncd import __version__
from syncd.allocator import fix_mmap_threshold
from syncd.errors import ConfigError, SyncdError
from syncd.model import RunReport
from syncd.report import render_report

if TYPE_CHECKING:
    from syncd.metrics import Metrics
    from syncd.state import Store
    from syncd.state.store import HistoryRow

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a process the closed pipe killed


def _config_path(arg: str | None) -> Path:
    return Path(arg or os.environ.get("SYNCD_CONFIG") or "syncd.yaml")


def _logging_options(argument_default: object = None) -> argparse.ArgumentParser:
    """The options every command takes (`argument_default=argparse.SUPPRESS` for a sub-command's copy: see
    `_rejects_parser`)."""
    options = argparse.ArgumentParser(add_help=False, argument_default=argument_default)
    options.add_argument(
        "--log-format",
        choices=["auto", "text", "json"],
        help="log lines as text or JSON (default: $SYNCD_LOG_FORMAT, else text on a terminal, JSON otherwise)",
    )
    options.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="default: $SYNCD_LOG_LEVEL, else info (warning for demo, whose report says it all); debug names members",
    )
    return options


def _config_option(argument_default: object = None) -> argparse.ArgumentParser:
    """`--config`, which every command that reads the config takes."""
    options = argparse.ArgumentParser(add_help=False, argument_default=argument_default)
    options.add_argument("--config", metavar="PATH", help="config file (default: $SYNCD_CONFIG, else ./syncd.yaml)")
    return options


def _output_option(parser: argparse.ArgumentParser, help: str, formats: tuple[str, ...] = ("text", "json")) -> None:
    """The `--output/-o` option of a command: one of `formats`, text by default; `help` says what each gives."""
    parser.add_argument("--output", "-o", choices=list(formats), default="text", help=help)


def build_parser() -> argparse.ArgumentParser:
    logging_options = _logging_options()  # every command
    common = [_config_option(), logging_options]

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
    report_help = "the report as a table (text, the default) or as one JSON object (json)"

    run = sub.add_parser(
        "run",
        parents=[*common, one_shot, selection],
        help="one reconciliation pass over every (group, provider) pair",
    )
    run.add_argument("--dry-run", action="store_true", help="plan and report, send nothing that changes anything")
    _output_option(run, report_help)
    run.add_argument(
        "--member",
        action="append",
        default=[],
        type=_member,
        metavar="EMAIL",
        help="only this member (repeatable; compared trimmed and case-insensitively), now: on every pair (or those "
        "--group/--provider choose) only their add or remove is sent, under the same consent rules, remembered "
        "rejects, removal policy and removal guard (weighed against the whole group) as a full pass; every other "
        "member is left as it is. The provider groups are still read, to know whether they are on them. A member "
        "pass writes its ledger rows, but is not the pairs' last pass in `syncd status`",
    )

    plan = sub.add_parser(
        "plan", parents=[*common, one_shot, selection], help="a dry run whose plan is saved, to apply it later"
    )
    plan.add_argument("-o", "--out", required=True, metavar="PLAN.json", help="where to save the plan")
    plan.add_argument("--output", choices=["text", "json"], default="text", help=report_help)

    apply = sub.add_parser(
        "apply",
        parents=[*common, one_shot],
        help="apply a saved plan; refused, sending nothing, if the sources or provider groups changed since",
    )
    apply.add_argument("plan_file", metavar="PLAN.json", help="a plan saved by syncd plan -o PLAN.json")
    _output_option(apply, report_help)

    validate = sub.add_parser("validate", parents=common, help="check the config (offline unless --online)")
    validate.add_argument(
        "--online",
        action="store_true",
        help="also check credentials and what the first run would do with each group (bound to, would adopt, "
        "would create); sends no change and writes nothing",
    )

    history = sub.add_parser(
        "history",
        parents=common,
        help="the per-member ledger from the state DB, newest first",
        description="The per-member ledger from the state DB, newest first: what was added or removed (or would "
        "have been, or was refused) where, when and why. Reads only the state DB (the config's state section): "
        "no provider credential is needed, and nothing is written. Times are UTC.",
    )
    history.add_argument("--group", metavar="NAME", help="only this group's entries")
    history.add_argument("--provider", metavar="NAME", help="only this provider's entries")
    history.add_argument("--member", metavar="EMAIL", help="only this member's entries (case-insensitive)")
    history.add_argument(
        "--since",
        type=_since,
        metavar="WHEN",
        help="only entries from WHEN on: an ISO date or date-time (2024-05-01, 2024-05-01T09:30; UTC unless it "
        "has an offset) or a time back from now (7d, 12h, 1h30m)",
    )
    history.add_argument(
        "--limit", type=_limit, default=100, metavar="N", help="the newest N entries (default 100; 0: all)"
    )
    history.add_argument(
        "--include-dry-runs",
        action="store_true",
        help="also show the entries of dry runs (what they would have done, and what they found refused)",
    )
    _output_option(
        history,
        "one line per entry (text, the default), or a JSON array with one entry object per line (json)",
    )

    _status_parser(sub, common)
    _rejects_parser(sub, common)
    _approve_parser(sub, common)
    _explain_parser(sub, common)

    serve = sub.add_parser(
        "serve",
        parents=common,
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

    # demo and sandbox read no config file: they take no --config
    sub.add_parser(
        "demo",
        parents=[logging_options],
        help="sync example groups into the bundled sandboxes in three passes: what would change, the real run, "
        "and a run that finds nothing to change",
    )

    sandbox = sub.add_parser(
        "sandbox", parents=[logging_options], help="serve the bundled provider sandboxes on loopback"
    )
    sandbox.add_argument("--port", type=int, default=8400, metavar="N", help="the port to listen on (default: 8400)")
    sandbox.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1, this machine only)"
    )
    return parser


def _status_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: list[argparse.ArgumentParser]
) -> None:
    status = sub.add_parser(
        "status",
        parents=common,
        help="per pair, from the state DB: its last pass's status, desired and actual counts, what it left pending, "
        "rejects, why blocked",
        description="Where each (group, provider) pair stands after its last pass, from the state DB alone (the "
        "config's state section: no provider credential is needed, and nothing is written): the status of that "
        "pass (as its run report said), when it was, the desired and actual member counts, what it left to add "
        "and remove, the members it rejected, and why its removals were held back. The last pass of a pair is "
        "its latest one in a real run (dry runs only with --include-dry-runs). Pairs that never had a pass are "
        "not listed. Times are UTC.",
    )
    status.add_argument("--group", metavar="NAME", help="only this group's pairs")
    status.add_argument("--provider", metavar="NAME", help="only this provider's pairs")
    status.add_argument(
        "--include-dry-runs",
        action="store_true",
        help="a dry run may be a pair's last pass too (then its status is what it would have done)",
    )
    _output_option(
        status,
        "a table (text, the default; coloured on a terminal unless NO_COLOR is set), or one JSON object: "
        '{"pairs": [{"group", "provider", "status", "last_run", "desired", "actual", "pending_add", '
        '"pending_remove", "rejected", "blocked_reason"}]} (json)',
    )


def _approve_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: list[argparse.ArgumentParser]
) -> None:
    approve = sub.add_parser(
        "approve",
        parents=common,
        help="let the removals the guard holds back for a group go at its next pass, once",
        description="A pair whose plan would remove too many members is quarantined: its removals are held back "
        "pass after pass (adds still go) until its plan is back under the limits, a run with "
        "--allow-mass-removal, or this approval. The next real pass of each approved pair removes what it then "
        "finds to remove, once, and leaves quarantine; every removal's ledger row carries the approval and its "
        "reason (`syncd history`). `syncd status` shows which pairs are blocked and why. Writes the state DB "
        "only (the config's state section: no provider credential is needed).",
    )
    approve.add_argument("group", metavar="GROUP", help="the group whose held removals may go (its name)")
    approve.add_argument(
        "--provider",
        metavar="NAME",
        action="append",
        default=[],
        help="only this provider's pair (repeatable; default: every quarantined pair of the group)",
    )
    approve.add_argument(
        "--reason", required=True, metavar="TEXT", help="why the removals may go: kept in the ledger with them"
    )


def _rejects_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: list[argparse.ArgumentParser]
) -> None:
    rejects = sub.add_parser(
        "rejects",
        parents=common,
        help="the remembered permanent rejects (clear: forget them, so the next pass tries those members again)",
        description="The permanent rejects syncd remembers (a member a provider refused for good: unknown there, "
        "unsubscribed, bounced, blacklisted, ...), oldest first: such a member is not sent again until their "
        "source data changes, or until `syncd rejects clear` forgets the reject. Group '' (text: (every group)) "
        "is a reject remembered for every group of its provider, from before rejects were kept per group. Reads "
        "only the state DB (no provider credential is needed). Times are UTC.",
    )
    rejects.add_argument(
        "--group", metavar="NAME", help="only this group's rejects (and those remembered for every group)"
    )
    rejects.add_argument("--provider", metavar="NAME", help="only this provider's rejects")
    _output_option(
        rejects,
        'a table (text, the default), one JSON object {"rejects": [{"provider", "group", "email", "code", '
        '"reason", "first_seen", "last_seen"}]} (json), or CSV with a header row and those columns (csv)',
        formats=("text", "json", "csv"),
    )
    actions = rejects.add_subparsers(dest="rejects_command", metavar="ACTION")
    # The options `rejects` itself takes default to "not given" here, so `syncd rejects --group G clear` keeps G.
    clear = actions.add_parser(
        "clear",
        parents=[_config_option(argparse.SUPPRESS), _logging_options(argparse.SUPPRESS)],
        argument_default=argparse.SUPPRESS,
        help="forget remembered rejects, so the next pass tries those members again",
        description="Forget the remembered permanent rejects that match --group, --provider and --member (every "
        "one without a filter, or with --all), so the next pass tries those members again, and say how many were "
        "forgotten. A person a provider holds as unsubscribed, bounced or blacklisted is still never added: the "
        "next pass finds that again. Writes to the state DB.",
    )
    clear.add_argument(
        "--group",
        metavar="NAME",
        help="this group's rejects (and those remembered for every group of a provider, which hold it back too)",
    )
    clear.add_argument("--provider", metavar="NAME", help="this provider's rejects")
    clear.add_argument(
        "--member", metavar="EMAIL", default=None, help="this member's rejects (matched case-insensitively)"
    )
    clear.add_argument(
        "--all", action="store_true", default=False, help="every remembered reject (the same as no filter, said aloud)"
    )


def _explain_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: list[argparse.ArgumentParser]
) -> None:
    explain = sub.add_parser(
        "explain",
        parents=common,
        help="per pair: is this person on the list, and why (sources, exclude/protected, rejects, consent, guard, "
        "ledger)",
        description="Per (group, provider) pair: whether the person is on the list and why, ending with a one-line "
        "verdict (on the list, will be added at the next pass, will be removed, not on the list because ...): the "
        "groups whose sources list them, an exclusion or protection, a remembered permanent reject, their consent "
        "state at the provider (unsubscribed, bounced, blacklisted: where the API can tell by reading), whether the "
        "removal guard holds the pair's removals back, whether they are a member of the provider group now, and "
        "the newest ledger entries of real runs. It only reads: the sources (as a pass does) and each pair's "
        "provider group (its members), and the state DB opened read-only (none is created). Emails are compared "
        "trimmed and case-insensitively. Times are UTC.",
    )
    explain.add_argument("email", type=_member, metavar="EMAIL", help="the person (their email)")
    explain.add_argument("--group", metavar="NAME", help="only this group's pairs (its name or key)")
    explain.add_argument(
        "--offline",
        action="store_true",
        help="contact no provider (no credentials needed for them): membership and consent are 'not checked', "
        "and the verdict says whether syncd wants them on the list",
    )
    _output_option(
        explain,
        'a short block per pair (text, the default), or one JSON object, {"email", "checked_at_provider", '
        '"listed_in", "errors", "pairs": [{"group", "provider", "verdict", "summary", "desired", "source", '
        '"source_reject", "excluded", "protected", "removal_policy", "added_by_syncd", "member", "consent", '
        '"refused", "remembered_reject", "quarantined", "last_pass", "ledger", "error"}]} (json; see syncd/explain.py)',
    )


def _member(text: str) -> str:
    """`--member`: an email, as its comparison key (trimmed, lower-cased)."""
    from syncd.model import email_key

    key = email_key(text)
    if "@" not in key or any(ch.isspace() for ch in key):
        raise argparse.ArgumentTypeError(f"expected an email address, got {text!r}")
    return key


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (no limit) or more, got {value}")
    return value


_AGO = re.compile(r"(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def _since(text: str) -> datetime:
    """`--since`: an ISO date or date-time (naive means UTC), or a time back from now (7d, 12h, 1h30m, 2w)."""
    value = text.strip()
    ago = _AGO.fullmatch(value.lower().replace(" ", ""))
    if value and ago:
        w, d, h, m, s = (int(g) if g else 0 for g in ago.groups())
        return datetime.now(UTC) - timedelta(weeks=w, days=d, hours=h, minutes=m, seconds=s)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "expected an ISO date or date-time (2024-05-01, 2024-05-01T09:30) or a time back from now "
            f"(7d, 12h, 1h30m), got {text!r}"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def main(argv: Sequence[str] | None = None) -> int:
    """The `syncd` command; returns its exit code. Output to a closed pipe (``syncd history | head``) ends it
    quietly, with 141 (as a process killed by SIGPIPE): no traceback, nothing on stderr."""
    try:
        try:
            return _main(argv)
        finally:
            if sys.stdout is not None:
                sys.stdout.flush()  # output still buffered meets a closed pipe here, not at exit
    except BrokenPipeError:
        # As the Python docs advise: point stdout at /dev/null, so the flush at exit cannot fail again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (AttributeError, OSError, ValueError):  # an stdout with no file descriptor: nothing to redirect
            pass
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    fix_mmap_threshold()  # large blocks go back to the system when freed (syncd.allocator)
    from syncd.logs import setup_logging

    level = args.log_level or os.environ.get("SYNCD_LOG_LEVEL") or ("error" if args.command == "demo" else "info")
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
        if args.command == "status":
            return cmd_status(args)
        if args.command == "rejects":
            return cmd_rejects(args)
        if args.command == "approve":
            return cmd_approve(args)
        if args.command == "explain":
            return cmd_explain(args)
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
                members=frozenset(getattr(args, "member", ())),  # run only
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
    known_groups = {name.casefold() for name in config.group_names()} | config.group_keys()  # a name or a key
    # Groups a SQL query names from its rows are known only when it runs: then any name may be one of them.
    for name in [] if config.has_query_named_groups else groups:
        if name.casefold() not in known_groups:
            raise ConfigError(f"no group named {name!r} in the config", file=str(config.path), key="--group")


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


def _open_state_read_only(args: argparse.Namespace) -> Store | None:
    """The state DB for a command that only reads it (history; status, rejects and explain alike): from the
    config's `state` section alone, so no provider or source credential is needed; opened read-only, neither
    created nor upgraded. None (said on stderr) when there is no state DB yet."""
    from syncd.config import load_state_settings
    from syncd.state import Store

    state = load_state_settings(_config_path(args.config))
    store = Store.open_read_only(state.url)
    if store is None:
        print(f"syncd: no state DB at {state.safe_url} yet: nothing has run with this config", file=sys.stderr)
    return store


def cmd_history(args: argparse.Namespace) -> int:
    """The ledger, newest first, printed as the rows come from the state DB (never all of it in memory)."""
    from contextlib import closing

    store = _open_state_read_only(args)
    if store is None:
        print("[]" if args.output == "json" else "no ledger entries match")
        return EXIT_OK
    limit: int | None = args.limit or None
    try:
        rows = store.stream_history(
            group=args.group,
            provider=args.provider,
            member=args.member,
            since=args.since,
            include_dry_runs=args.include_dry_runs,
            limit=limit + 1 if limit else None,  # one more: to know whether there are more
        )
        with closing(rows):
            more = _print_history(rows, limit, json_lines=args.output == "json", out=sys.stdout)
    finally:
        store.close()
    if more:
        print(
            f"syncd: showing the newest {limit} entries; there are more (--limit N for more, --limit 0 for all)",
            file=sys.stderr,
        )
    return EXIT_OK


def _print_history(rows: Iterable[HistoryRow], limit: int | None, *, json_lines: bool, out: TextIO) -> bool:
    """Print up to `limit` rows as they come; whether there were more. JSON: an array, one entry per line."""
    count, more = 0, False
    for row in rows:
        if limit is not None and count == limit:
            more = True
            break
        if json_lines:
            entry = {
                "at": row.at.isoformat(),
                "run_id": row.run_id,
                "dry_run": row.dry_run,
                "group": row.group,
                "provider": row.provider,
                "email": row.email,
                "op": str(row.op),
                "outcome": str(row.outcome),
                "reason": row.reason,
            }
            out.write(("[\n" if count == 0 else ",\n") + json.dumps(entry))
        else:
            dry = "  [dry run]" if row.dry_run else ""
            out.write(
                f"{row.at:%Y-%m-%d %H:%M:%S}  {row.run_id[:8]}  {row.group} → {row.provider}  {row.op!s:<6} "
                f"{row.outcome!s:<11} {row.email}  ({row.reason}){dry}\n"
            )
        count += 1
    if json_lines:
        out.write("[]\n" if count == 0 else "\n]\n")
    elif count == 0:
        out.write("no ledger entries match\n")
    return more


# ----------------------------------------------------------------------------------------------- status


def cmd_status(args: argparse.Namespace) -> int:
    """Each pair's last pass, from the state DB opened read-only. Exit 0 whatever the statuses say."""
    from syncd.report import render_status, status_as_dict

    store = _open_state_read_only(args)
    if store is None:
        states = []
    else:
        try:
            states = store.pair_states(group=args.group, provider=args.provider, include_dry_runs=args.include_dry_runs)
        finally:
            store.close()
    if args.output == "json":
        print(json.dumps(status_as_dict(states), indent=2))
        return EXIT_OK
    filtered = args.group is not None or args.provider is not None
    render_status(
        states,
        sys.stdout,
        now=datetime.now(UTC),
        colour=_colour(sys.stdout),
        empty="no pair matches" if filtered else "no pair has had a pass yet",
    )
    return EXIT_OK


def _colour(out: TextIO) -> bool:
    """Colour for a terminal, unless NO_COLOR is set (https://no-color.org) or the terminal is dumb."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return out.isatty()
    except (AttributeError, ValueError):  # no such stream, or a closed one
        return False


# ---------------------------------------------------------------------------------------------- rejects


def cmd_rejects(args: argparse.Namespace) -> int:
    if args.rejects_command == "clear":
        return cmd_rejects_clear(args)
    from syncd.report import rejects_as_dict, render_rejects, write_rejects_csv

    store = _open_state_read_only(args)
    if store is None:
        rows = []
    else:
        try:
            rows = store.reject_rows(provider=args.provider, group=args.group)
        finally:
            store.close()
    if args.output == "json":
        print(json.dumps(rejects_as_dict(rows), indent=2))
    elif args.output == "csv":
        write_rejects_csv(rows, sys.stdout)
    else:
        filtered = args.group is not None or args.provider is not None
        render_rejects(rows, sys.stdout, empty="no remembered rejects match" if filtered else "no remembered rejects")
    return EXIT_OK


def cmd_rejects_clear(args: argparse.Namespace) -> int:
    """Forget rejects. Refused (exit 2, as a usage error) without a filter or --all, or with both."""
    from syncd.config import load_state_settings
    from syncd.state import Store

    filters = {"provider": args.provider, "group": args.group, "member": args.member}
    given = [f"--{name}" for name, value in filters.items() if value is not None]
    if given and args.all:
        return _usage_error("rejects clear", f"--all clears every reject: leave out {', '.join(given)}")
    # No filter: every reject, as DESIGN.md's `syncd rejects clear` says. Harmless to consent: a person the
    # provider holds as unsubscribed, bounced or blacklisted is found so again by the next pass's consent read.
    state = load_state_settings(_config_path(args.config))
    existing = Store.open_read_only(state.url)  # nothing remembered yet: say so, and create no state DB
    if existing is None:
        print(f"syncd: no state DB at {state.safe_url} yet: nothing has run with this config", file=sys.stderr)
        print("no remembered rejects match: nothing cleared")
        return EXIT_OK
    existing.close()
    with Store.open(state.url) as store:
        cleared = store.forget_rejects(**filters)
    if not cleared:
        print("no remembered rejects match: nothing cleared")
    else:
        noun = "reject" if cleared == 1 else "rejects"
        print(f"cleared {cleared} remembered {noun}: the next pass tries those members again")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- approve


def cmd_approve(args: argparse.Namespace) -> int:
    """Approve a group's quarantined pairs: exit 0 when at least one was approved, 1 when none is held back."""
    from syncd.config import load_state_settings
    from syncd.state import Store

    reason = args.reason.strip()
    if not reason:
        return _usage_error("approve", "--reason must say why the removals may go")
    state = load_state_settings(_config_path(args.config))
    existing = Store.open_read_only(state.url)
    held = existing.quarantined(args.group) if existing is not None else []
    if existing is not None:
        existing.close()
    wanted = [q for q in held if not args.provider or q.provider in args.provider]
    if not wanted:
        where = f" on {', '.join(args.provider)}" if args.provider else ""
        print(
            f"syncd: {args.group}{where}: no pair is held back by the removal guard: nothing to approve",
            file=sys.stderr,
        )
        return EXIT_ERROR
    with Store.open(state.url) as store:
        approved = store.approve(args.group, [q.provider for q in wanted], reason)
    for q in approved:
        since = q.blocked_at.strftime("%Y-%m-%d %H:%M UTC")
        print(
            f"approved {q.name} → {q.provider}: the {q.held_back} removals held back since {since} ({q.reason}) "
            "go at its next pass"
        )
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- explain


def cmd_explain(args: argparse.Namespace) -> int:
    """Why a person is (not) on each list. Reads only; exit 0 whatever the verdicts are."""
    from syncd.config import load_config
    from syncd.explain import explain, render_explanation

    config = load_config(_config_path(args.config))
    _check_selection(config, [args.group] if args.group else [], [])
    explanation = asyncio.run(explain(config, args.email, group=args.group, offline=args.offline))
    if args.output == "json":
        print(json.dumps(explanation.as_dict(), indent=2))
    else:
        render_explanation(explanation, sys.stdout)
    return EXIT_OK


def _usage_error(command: str, problem: str) -> int:
    """A mistake in the options argparse cannot see: said as argparse says its own, with its exit code (2)."""
    print(f"syncd {command}: error: {problem}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
