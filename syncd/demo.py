"""`syncd demo` and `syncd sandbox`: syncd against the bundled sandboxes, on a real loopback port.

The demo writes a throwaway config and state DB, then runs the three passes a new user wants to see: the
plan (dry run), the apply, and a second pass that finds nothing to change.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
from pathlib import Path
from typing import Any, TextIO

import yaml

from connectors.sandbox.server import ServerThread
from connectors.sandbox.world import SandboxProvider, build_world, mount
from syncd.cli import render_report
from syncd.config import load_config
from syncd.metrics import Metrics
from syncd.model import RunReport
from syncd.reconciler import PassOptions, Reconciler
from syncd.state import Store

DEMO_GROUPS: list[dict[str, Any]] = [
    {
        "name": "US Sales Team",
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
    {
        "name": "Newsletter DE",
        "removal_policy": "mirror",  # the CleverReach list exists already; mirror it exactly
        "members": ["erin@example.de", "felix@example.de", "greta@example.de"],
    },
]


def demo_config(world: list[SandboxProvider], server_url: str, state_url: str) -> dict[str, Any]:
    return {
        "state": {"url": state_url},
        "safety": {"max_removals": 500, "max_removal_ratio": 0.75},
        "providers": [p.config_entry(server_url) for p in world],
        "groups": DEMO_GROUPS,
    }


def run_demo(out: TextIO) -> int:
    world = build_world()
    with ServerThread(mount(world)) as server, tempfile.TemporaryDirectory(prefix="syncd-demo-") as tmp:
        path = Path(tmp) / "syncd.yaml"
        path.write_text(yaml.safe_dump(demo_config(world, server.url, f"sqlite:///{tmp}/syncd.db"), sort_keys=False))
        config = load_config(path)
        print(f"syncd demo: sandboxes for {', '.join(p.type for p in world)} on {server.url}", file=out)
        print(f"config: {path} (state DB beside it)\n", file=out)

        async def passes() -> list[RunReport]:
            store = Store.open(config.state.url)
            try:
                reconciler = Reconciler(config, store, Metrics())
                return [
                    await reconciler.run(PassOptions(dry_run=True)),
                    await reconciler.run(PassOptions()),
                    await reconciler.run(PassOptions()),
                ]
            finally:
                store.close()

        reports = asyncio.run(passes())
        titles = [
            "1. What would change (syncd run --dry-run)",
            "2. Apply it (syncd run)",
            "3. Run again: nothing to do",
        ]
        for title, report in zip(titles, reports, strict=True):
            print(f"== {title}", file=out)
            render_report(report, out)
            print(file=out)
        last = reports[-1]
        writes = sum(p.requests["write"] for p in last.pairs)
        steady = not last.changed and writes == 0
        print(
            f"second pass: {len(last.pairs)} pairs, {sum(p.requests['read'] for p in last.pairs)} read requests, "
            f"{writes} write requests: {'in sync' if steady else 'NOT in sync'}",
            file=out,
        )
        return 0 if steady else 1


def serve_sandboxes(host: str, port: int, out: TextIO) -> int:
    world = build_world()
    server = ServerThread(mount(world), host=host, port=port).start()
    print(f"sandboxes on {server.url} (Ctrl-C to stop); a config to try them:\n", file=out)
    print(yaml.safe_dump({"providers": [p.config_entry(server.url) for p in world]}, sort_keys=False), file=out)
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
