"""Benchmark: a first sync of N members (default 50,000) into one provider's sandbox, end to end.

Runs the real reconciler (config file, state DB on SQLite, connectors, planner, applier, ledger) against a
sandbox served in-process over httpx's ASGI transport, with pacing off, and prints the requests it took
(against the minimum the API's batch size allows), the wall time split into syncd's share and the
sandbox's, and peak memory. Each provider runs in its own process so peak RSS is its own.

    .venv/bin/python bench/first_sync.py [--members 50000] [--provider communic8|cleverreach|all] [--paced]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from connectors.registry import PROVIDERS as REGISTRY
from connectors.settings import BuildContext
from sandboxes._core import Mount, Request, SandboxApp
from sandboxes.world import build_world
from syncd.config import load_config
from syncd.metrics import Metrics
from syncd.reconciler import PassOptions, Reconciler
from syncd.state import Store

PROVIDERS = ("communic8", "cleverreach")


class TimedMount(Mount):
    """Adds up the time spent inside the sandboxes, so syncd's own share can be told apart."""

    def __init__(self, apps: dict[str, SandboxApp]) -> None:
        super().__init__(apps)
        self.seconds = 0.0
        for app in apps.values():
            original = app.handle

            async def timed(request: Request, _original: Any = original) -> Any:
                started = time.perf_counter()
                try:
                    return await _original(request)
                finally:
                    self.seconds += time.perf_counter() - started

            app.handle = timed  # type: ignore[method-assign]


def one(provider_type: str, n: int, paced: bool = False) -> dict[str, Any]:
    world = [p for p in build_world(people=()) if p.type == provider_type]
    (provider,) = world
    emails = [f"bench{i:06d}@example.com" for i in range(n)]
    if provider_type == "communic8":  # Communic8 cannot create recipients: they exist already
        for e in emails:
            provider.app.add_recipient(e)  # type: ignore[attr-defined]
    app = TimedMount({provider.prefix: provider.app})
    with tempfile.TemporaryDirectory() as tmp:
        entry = provider.config_entry("http://127.0.0.1")
        if not paced:  # else the connector's default pacing (the API's documented or assumed limit)
            entry["rate_limit"] = 1e9
        cfg = {
            "state": {"url": f"sqlite:///{tmp}/state.db"},
            "providers": [entry],
            # half the members in the mapping form, so both shapes of the config loader are exercised
            "groups": [
                {
                    "name": "Bench",
                    "members": [
                        e if i % 2 else {"email": e, "first_name": "Bench", "last_name": str(i)}
                        for i, e in enumerate(emails)
                    ],
                }
            ],
        }
        path = Path(tmp) / "syncd.yaml"
        path.write_text(yaml.safe_dump(cfg))
        started = time.perf_counter()
        config = load_config(path)
        loaded = time.perf_counter() - started
        store = Store.open(config.state.url)
        try:
            transport = httpx.ASGITransport(app=app)
            t0 = time.perf_counter()
            report = asyncio.run(Reconciler(config, store, Metrics(), transport=transport).run(PassOptions()))
            wall = time.perf_counter() - t0
            sandbox_s = app.seconds
            t1 = time.perf_counter()
            second = asyncio.run(Reconciler(config, store, Metrics(), transport=transport).run(PassOptions()))
            steady = time.perf_counter() - t1
        finally:
            store.close()
    (pair,) = report.pairs
    (pair2,) = second.pairs
    # the batch the connector really uses: the API's cap, or the vendor's own size where that is smaller
    batch = REGISTRY[provider_type].build(config.provider(entry["name"]), BuildContext()).capabilities.max_add_batch
    return {
        "provider": provider_type,
        "members": n,
        "status": str(pair.status),
        "added": pair.add,
        "requests": pair.requests,
        "mutating_requests_served": provider.app.count(mutating=True),
        "batch": batch,
        "minimum_writes": 1 + math.ceil(n / batch),
        "config_load_s": round(loaded, 2),
        "first_sync_wall_s": round(wall, 2),
        "of_which_in_sandbox_s": round(sandbox_s, 2),
        "second_pass_wall_s": round(steady, 2),
        "second_pass_requests": pair2.requests,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=50_000)
    parser.add_argument("--provider", choices=[*PROVIDERS, "all"], default="all")
    parser.add_argument("--paced", action="store_true", help="keep the provider's default pacing")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child or args.provider != "all":
        print(json.dumps(one(args.provider, args.members, args.paced)))
        return
    for provider in PROVIDERS:
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--provider", provider, "--members", str(args.members)]
            + (["--paced"] if args.paced else []),
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        result = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
