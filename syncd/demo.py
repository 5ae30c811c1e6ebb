"""`syncd demo` and `syncd sandbox`: syncd against the bundled sandboxes, on a real loopback port.

The demo writes a throwaway config and state DB, then runs the three passes a new user wants to see: the
plan (dry run), the apply, and a third pass that finds nothing to change, printing each pair as it finishes.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from sandboxes.server import ServerThread
from sandboxes.world import PEOPLE, SandboxCrm, SandboxProvider, build_crms, build_world, mount
from syncd.config import load_config
from syncd.metrics import Metrics
from syncd.model import PairResult, RunReport
from syncd.progress import progress_display
from syncd.reconciler import PassOptions, Reconciler
from syncd.report import render_report
from syncd.state import Store

EMAIL_PROVIDERS = ["c8", "cr", "gt", "bc"]

DEMO_GROUPS: list[dict[str, Any]] = [
    {
        "name": "US Sales Team",
        "targets": EMAIL_PROVIDERS,
        "members": [
            "alice@example.com",
            {"email": "Bob.Stone@example.com", "first_name": "Bob", "last_name": "Stone"},
            "carol@example.com",
            "dan@example.com",
            "zoe@example.com",
            "ALICE@example.com",  # a duplicate: rejected, the first spelling wins
            "not-an-email",  # invalid: rejected before planning, never sent
        ],
    },
    # "Newsletter DE" comes from a HubSpot list (see sandboxes/world.py, build_crms); its lists exist
    # already at CleverReach and Bitcaster, and are mirrored exactly.
    {
        "name": "Postal Mailing",  # printed mail: Stannp needs a postal address for everyone it adds
        "targets": ["sp"],
        "members": [
            {
                "email": p.email,
                "first_name": p.first_name,
                "last_name": p.last_name,
                "address": {
                    "line1": p.address.line1,
                    "city": p.address.city,
                    "postcode": p.address.postcode,
                    "country": p.address.country,
                },
            }
            if p.address
            else {"email": p.email, "first_name": p.first_name, "last_name": p.last_name}
            for p in (PEOPLE[0], PEOPLE[1], PEOPLE[4], PEOPLE[6])  # greta has no address: rejected, with why
        ],
    },
]


def demo_config(
    world: Sequence[SandboxProvider], server_url: str, state_url: str, crms: Sequence[SandboxCrm] = ()
) -> dict[str, Any]:
    return {
        "state": {"url": state_url},
        "safety": {"max_removals": 500, "max_removal_ratio": 0.75},
        "providers": [p.config_entry(server_url) for p in world],
        "sources": [c.source_entry(server_url) for c in crms],
        "groups": DEMO_GROUPS,
    }


PASSES = (
    ("1. What would change (syncd run --dry-run)", True),
    ("2. Apply it (syncd run)", False),
    ("3. Run again: nothing to do", False),
)


def pair_line(result: PairResult) -> str:
    """One line per pair as it finishes: where, what it came to, and its counts."""
    counts = f"+{result.add} -{result.remove}"
    if result.rejected:
        counts += f", {len(result.rejected)} rejected"
    if result.unsupported_remove:
        counts += f", {result.unsupported_remove} to remove by hand"
    return f"  done  {result.group} → {result.provider}: {result.status} ({counts})"


def run_demo(out: TextIO) -> int:
    """The three passes, each printed as it goes: a line per pair as it finishes, then the pass's report. On
    a terminal a progress line shows the member changes of the pass under way."""
    world, crms = build_world(), build_crms(targets=EMAIL_PROVIDERS)
    with ServerThread(mount(world, crms)) as server, tempfile.TemporaryDirectory(prefix="syncd-demo-") as tmp:
        path = Path(tmp) / "syncd.yaml"
        cfg = demo_config(world, server.url, f"sqlite:///{tmp}/syncd.db", crms)
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        config = load_config(path)
        names = ", ".join([*(p.type for p in world), *(c.type for c in crms)])
        print(f"syncd demo: sandboxes for {names} on {server.url}", file=out)
        print(f"config: {path} (state DB beside it)", file=out, flush=True)

        def done(result: PairResult) -> None:
            print(pair_line(result), file=out, flush=True)

        progress = progress_display()  # a progress line on a terminal, for the passes that take seconds
        last: RunReport | None = None
        store = Store.open(config.state.url)
        try:
            reconciler = Reconciler(config, store, Metrics(), progress=progress, pair_done=done)
            for title, dry_run in PASSES:
                print(f"\n== {title}", file=out, flush=True)
                last = asyncio.run(reconciler.run(PassOptions(dry_run=dry_run)))
                if progress is not None:
                    progress.close()
                render_report(last, out)
        finally:
            store.close()
        assert last is not None
        writes = sum(p.requests["write"] for p in last.pairs)
        steady = not last.changed and writes == 0 and not last.errors
        print(
            f"\nthird pass: {len(last.pairs)} pairs, {sum(p.requests['read'] for p in last.pairs)} read requests, "
            f"{writes} write requests: {'in sync' if steady else 'NOT in sync'}",
            file=out,
        )
        return 0 if steady else 1


def serve_sandboxes(host: str, port: int, out: TextIO) -> int:
    world, crms = build_world(), build_crms()
    server = ServerThread(mount(world, crms), host=host, port=port).start()
    print(f"sandboxes on {server.url} (Ctrl-C to stop); a config to try them:\n", file=out)
    example = {
        "providers": [p.config_entry(server.url) for p in world],
        "sources": [c.source_entry(server.url) for c in crms],
    }
    print(yaml.safe_dump(example, sort_keys=False), file=out)
    print(
        "Request logs: GET <base>/_sandbox/requests on each provider's prefix root, e.g. "
        + json.dumps(f"{server.url}/{world[0].prefix}/_sandbox/requests"),
        file=out,
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
