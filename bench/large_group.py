"""Benchmark: one group of a million members (default; `--members N`), end to end, in bounded memory.

Per provider (Communic8 and CleverReach), each in processes of its own:

* the provider's sandbox is served by uvicorn in a separate process on a loopback port (Communic8's directory
  seeded with every member, and with the people of the change pass), so the syncd process's peak RSS is syncd's
  own;
* the members come from a SQL source (a SQLite file of N people, in no particular order: the order a CRM
  answers in), targeting one group; the state DB is SQLite; pacing is off;
* three passes, each a fresh syncd process: the first sync (the group is created and filled), a steady pass
  that changes nothing, and a pass after `--changes` people left the source and as many joined.

For each pass it prints the requests (read and write) against the minimum the API allows, the wall and CPU time,
the syncd process's peak RSS, the event loop's longest stall (a 10 ms ticker's worst lateness), the state rows
written, and the time `plan()` took against a bare Python set
difference of the same emails (`set(desired) - set(actual)` and back), measured in the same process right after
the pass.

    .venv/bin/python bench/large_group.py [--members 1000000] [--provider communic8|cleverreach|all]
                                          [--changes 100] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

PROVIDERS = ("communic8", "cleverreach")
GROUP = "Everyone"
FIRST = ["anna", "ben", "clara", "david", "emma", "felix", "greta", "hugo", "ida", "jonas", "lena", "max", "nina"]
LAST = ["schmidt", "meyer", "weber", "wagner", "becker", "hoffmann", "koch", "richter", "klein", "wolf", "neumann"]
READY = "sandbox ready"


# ----------------------------------------------------------------------------------------------- data


def person(i: int) -> tuple[str, str, str]:
    first, last = FIRST[i % len(FIRST)], LAST[(i // len(FIRST)) % len(LAST)]
    return f"{first}.{last}.{i}@example.org", first.title(), last.title()


def make_crm(path: Path, n: int, *, leave: int = 0, join: int = 0) -> None:
    """People 0..n-1, less the first `leave`, plus people n..n+join-1, in a shuffled (but fixed) order."""
    numbers = list(range(leave, n + join))
    random.Random(n).shuffle(numbers)
    path.unlink(missing_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE people (email TEXT, first_name TEXT, last_name TEXT)")
        db.executemany("INSERT INTO people VALUES (?, ?, ?)", (person(i) for i in numbers))


# -------------------------------------------------------------------------------------------- sandbox


def serve(provider: str, n: int, port: int) -> None:
    """The sandbox process: build, seed, serve until killed."""
    from sandboxes._core import Mount
    from sandboxes.server import ServerThread
    from sandboxes.world import build_world

    (world,) = [p for p in build_world(people=()) if p.type == provider]
    if provider == "communic8":  # Communic8 cannot create recipients: everyone exists already
        for i in range(n):
            world.app.add_recipient(person(i)[0])  # type: ignore[attr-defined]
    server = ServerThread(Mount({world.prefix: world.app}), port=port).start()
    print(READY, server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        server.stop()


def start_sandbox(provider: str, n: int) -> tuple[subprocess.Popen[str], str]:
    from sandboxes.server import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", provider, "--members", str(n), "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(READY):
        proc.kill()
        raise RuntimeError(f"the {provider} sandbox did not start: {line!r}")
    return proc, line.split()[-1]


# ------------------------------------------------------------------------------------------ one pass


class PlanTimer:
    """Wraps the reconciler's `plan` to time it, keeping the emails it compared for the bare set difference.

    The emails are kept as a few joined strings per side, not as the members' own strings: holding those would keep
    them alive past the pass's end and hide what freeing them costs (the pass frees its members a slice at a
    time, `connectors.http.let_go`). The copies count in the peak RSS, against syncd."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.desired: list[str] = []
        self.actual: list[str] = []

    def install(self) -> None:
        import syncd.reconciler as reconciler

        original = reconciler.plan

        def timed(**kwargs: Any) -> Any:
            started = time.perf_counter()
            result = original(**kwargs)
            self.seconds += time.perf_counter() - started
            self.desired = _joined(kwargs["desired"])
            self.actual = _joined(kwargs["actual"] or ())
            return result

        reconciler.plan = timed  # type: ignore[assignment]

    def compare(self, repeat: int = 3) -> dict[str, float]:
        """The plan as it ran in the pass, and (best of `repeat`) a bare set difference of the same emails."""
        desired = [key for part in self.desired for key in part.split("\n")]
        actual = [key for part in self.actual for key in part.split("\n")]

        def bare() -> None:
            d, a = set(desired), set(actual)
            _ = d - a, a - d

        bare_s = min(_timed(bare) for _ in range(repeat))
        return {
            "plan_in_pass_s": round(self.seconds, 3),
            "bare_set_difference_s": round(bare_s, 3),
            "ratio_in_pass": round(self.seconds / bare_s, 2),
        }


def _joined(members: Sequence[Any], step: int = 65_536) -> list[str]:
    """The members' keys as a few joined strings: joined a step at a time, as one join of a million strings would
    hold the interpreter (and the event loop) for longer than anything syncd does."""
    return ["\n".join(m.key for m in members[i : i + step]) for i in range(0, len(members), step)]


def _timed(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def state_rows(url: str) -> dict[str, tuple[int, int]]:
    """Per table of the state DB: its row count and its largest rowid (every table here has one)."""
    path = url.removeprefix("sqlite:///")
    if not Path(path).exists():
        return {}
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            t: db.execute(f'SELECT count(*), coalesce(max(rowid), 0) FROM "{t}"').fetchone()
            for t in tables
            if t != "alembic_version"
        }


def rows_written(url: str, before: dict[str, tuple[int, int]], since: float) -> dict[str, int]:
    """Rows inserted (rowids past the largest before), deleted (the count's shortfall) and updated (a cache or
    reject row whose timestamp is from this pass) per table."""
    after = state_rows(url)
    written: dict[str, int] = {}
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        for table, (count, top) in after.items():
            count0, top0 = before.get(table, (0, 0))
            inserted = max(0, top - top0)
            deleted = max(0, count0 + inserted - count)
            updated = 0
            stamp = {"recipient_ids": "updated_at", "rejects": "last_seen"}.get(table)
            if stamp:
                since_text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(since))
                changed = db.execute(f'SELECT count(*) FROM "{table}" WHERE {stamp} >= ?', (since_text,)).fetchone()[0]
                updated = max(0, changed - inserted)
            if inserted + deleted + updated:
                written[table] = inserted + deleted + updated
    return written


class GcPauses:
    """The longest garbage collection of each generation during the pass (it stops every thread)."""

    def __init__(self) -> None:
        self.worst = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            gen = info["generation"]
            self.worst[gen] = max(self.worst[gen], time.perf_counter() - self._started)


class LoopLag:
    """The event loop's longest stall during the pass: a task that asks to wake every 10 ms records how late it
    woke. A synchronous DB call or a long parse on the loop shows here; one in a worker thread does not."""

    TICK = 0.01

    def __init__(self) -> None:
        self.worst = 0.0
        self.ticks = 0

    async def watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.TICK
            await asyncio.sleep(self.TICK)
            self.worst = max(self.worst, loop.time() - due)
            self.ticks += 1


async def _run_watched(reconciler: Any, options: Any, lag: LoopLag) -> Any:
    watcher = asyncio.create_task(lag.watch())
    try:
        return await reconciler.run(options)
    finally:
        await asyncio.sleep(3 * lag.TICK)  # what the pass frees as it ends stalls the loop too: measured
        watcher.cancel()


def one_pass(config_path: str) -> dict[str, Any]:
    """A syncd process: load the config, run one pass, report (peak RSS read before anything else is done)."""
    from syncd.allocator import fix_mmap_threshold
    from syncd.config import load_config
    from syncd.metrics import Metrics
    from syncd.reconciler import PassOptions, Reconciler
    from syncd.state import Store

    fix_mmap_threshold()  # as the `syncd` command does when it starts
    timer = PlanTimer()
    timer.install()
    config = load_config(config_path)
    before, since = state_rows(config.state.url), time.time() - 1
    cpu0, wall0 = time.process_time(), time.perf_counter()
    store = Store.open(config.state.url)
    lag = LoopLag()
    pauses = GcPauses()
    gc.callbacks.append(pauses)
    try:
        report = asyncio.run(_run_watched(Reconciler(config, store, Metrics()), PassOptions(), lag))
    finally:
        gc.callbacks.remove(pauses)
        store.close()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (pair,) = report.pairs
    gc.collect()
    out = {
        "status": str(pair.status),
        "desired": pair.desired,
        "actual_before": pair.actual_before,
        "added": pair.add,
        "removed": pair.remove,
        "rejected": len(pair.rejected),
        "requests": pair.requests,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "peak_rss_mb": round(peak),
        "loop_stall_max_ms": round(lag.worst * 1000),
        "gc_pause_max_ms": [round(w * 1000) for w in pauses.worst],
        "state_rows_written": rows_written(config.state.url, before, since),
        "state_db_mb": round(Path(config.state.url.removeprefix("sqlite:///")).stat().st_size / 2**20),
    }
    out.update(timer.compare())
    return out


# ------------------------------------------------------------------------------------------ the minimum


def minimum(provider: str, kind: str, n: int, changes: int) -> dict[str, int]:
    """The fewest requests the API allows for the pass (Communic8's directory holds n + changes people)."""
    if provider == "communic8":
        if kind == "first":  # name look-up + the directory (an empty cache) ; create + adds of 1000
            return {"read": 1 + math.ceil((n + changes) / 100), "write": 1 + math.ceil(n / 1000)}
        if kind == "steady":
            return {"read": 1, "write": 0}  # the bound group, with all its member ids inline
        return {"read": 1, "write": math.ceil(changes / 1000) * 2}  # cached ids; adds, removes
    if kind == "first":  # name look-up, bounces, blacklist ; create + upserts of 250
        return {"read": 3, "write": 1 + math.ceil(n / 250)}
    pages = n // 5000 + 1  # no total: the page after the last full one
    if kind == "steady":
        return {"read": pages, "write": 0}
    # + bounces, blacklist, the group's inactive receivers ; upserts and upsertplus of 250
    return {"read": pages + 3, "write": math.ceil(changes / 250) * 2}


# ---------------------------------------------------------------------------------------------- main


def run_provider(provider: str, n: int, changes: int) -> dict[str, Any]:
    from sandboxes.world import build_world

    results: dict[str, Any] = {"provider": provider, "members": n}
    with tempfile.TemporaryDirectory() as tmp:
        crm = Path(tmp) / "crm.db"
        make_crm(crm, n)
        started = time.perf_counter()
        sandbox, url = start_sandbox(provider, n + changes)
        results["sandbox_start_s"] = round(time.perf_counter() - started, 1)
        try:
            (world,) = [p for p in build_world(people=()) if p.type == provider]
            entry = world.config_entry(url)
            entry["rate_limit"] = 1e9  # pacing off
            config = {
                "state": {"url": f"sqlite:///{tmp}/state.db"},
                "providers": [entry],
                "sources": [
                    {
                        "type": "sql",
                        "url": f"sqlite:///{crm}",
                        "query": "SELECT email, first_name, last_name FROM people",
                        "group": GROUP,
                        "targets": [entry["name"]],
                        "timeout": 600,
                    }
                ],
            }
            path = Path(tmp) / "syncd.yaml"
            path.write_text(yaml.safe_dump(config))
            for kind in ("first", "steady", "changes"):
                if kind == "changes":
                    if not changes:
                        continue
                    make_crm(crm, n, leave=changes, join=changes)
                out = json.loads(
                    subprocess.run(
                        [sys.executable, __file__, "--pass", str(path)], check=True, capture_output=True, text=True
                    )
                    .stdout.strip()
                    .splitlines()[-1]
                )
                out["minimum_requests"] = minimum(provider, kind, n, changes)
                results[kind] = out
        finally:
            sandbox.kill()
            sandbox.wait()
    return results


def show(result: dict[str, Any]) -> None:
    print(f"\n{result['provider']}: {result['members']:,} members (sandbox started in {result['sandbox_start_s']} s)")
    header = f"{'pass':8} {'requests r/w (minimum)':>26} {'wall s':>7} {'cpu s':>6} {'peak RSS':>9} "
    header += f"{'stall ms':>8} {'rows written':>13} {'plan s':>7} {'bare s':>7} {'plan/bare':>10}"
    print(header)
    for kind in ("first", "steady", "changes"):
        r = result.get(kind)
        if r is None:
            continue
        req, low = r["requests"], r["minimum_requests"]
        requests = f"{req['read']}/{req['write']} ({low['read']}/{low['write']})"
        rows = sum(r["state_rows_written"].values())
        print(
            f"{kind:8} {requests:>26} {r['wall_s']:>7} {r['cpu_s']:>6} {r['peak_rss_mb']:>6} MB "
            f"{r['loop_stall_max_ms']:>8} {rows:>13,} "
            f"{r['plan_in_pass_s']:>7} {r['bare_set_difference_s']:>7} {r['ratio_in_pass']:>10}"
        )
        print(
            f"{'':8} {r['status']}: +{r['added']} -{r['removed']}, {r['rejected']} rejected; longest GC pause per "
            f"generation {r['gc_pause_max_ms']} ms; rows "
            f"{r['state_rows_written']}; state DB {r['state_db_mb']} MB"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--provider", choices=[*PROVIDERS, "all"], default="all")
    parser.add_argument("--changes", type=int, default=100, help="people who leave and join before the 3rd pass")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--serve", choices=PROVIDERS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pass", dest="config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.members, args.port)
        return
    if args.config:
        print(json.dumps(one_pass(args.config)))
        return
    for provider in PROVIDERS if args.provider == "all" else (args.provider,):
        result = run_provider(provider, args.members, args.changes)
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            show(result)
        sys.stdout.flush()


if __name__ == "__main__":
    sys.path.insert(0, os.fspath(Path(__file__).resolve().parent.parent))
    main()
