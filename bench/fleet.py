"""Benchmark: a fleet of `syncd serve` replicas on one PostgreSQL sharing hundreds of pairs, one of them killed.

By default 500 pairs (50 groups x 10 provider accounts, each a Communic8 sandbox that enforces its own rate limit,
throttling with 429 above it) and 4 replicas of `syncd serve` (subprocesses) on one PostgreSQL state DB, passes
every minute. One replica is killed with SIGKILL in the middle of the first period. The run lasts `--periods`
periods, then the replicas are stopped and it prints, as JSON:

* runs per pair and period (completed pair passes; the pass the killed replica did not finish is not one), and of
  them the runs that made changes: every pair is synced by exactly one run in the first period and by none after
  (a pass the killed replica finished but the queue had not yet marked done is run again by its taker, and
  finds nothing to do);
* duplicate writes: groups created twice, members sent twice to a group that had them;
* per provider account: requests, 429s answered (must be 0: the replicas share one budget per provider), the
  most requests in any second vs the limit, and, for the first period, when its last request went vs the lower
  bound requests / rate (the takeover of the killed replica's pairs, after `stalled_after`, is in that time);
* how long the killed replica's pairs stayed unsynced.

    .venv/bin/python bench/fleet.py --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
        [--groups 50] [--accounts 10] [--replicas 4] [--members 5] [--rate 20] [--periods 2]

It creates (and drops) a schema of its own in that database.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from sqlalchemy.engine import make_url

from sandboxes._core import Mount, RateLimit
from sandboxes.communic8 import DEFAULT_KEYS, Communic8Sandbox
from sandboxes.server import ServerThread, free_port

PERIOD = 60.0  # seconds: passes every minute
KEY = next(iter(DEFAULT_KEYS.values()))


def start_replica(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SYNCD_LOG_FORMAT": "json"}
    return subprocess.Popen(
        [sys.executable, "-m", "syncd", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        env=env,
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    schema = f"fleet_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(args.pg_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = make_url(args.pg_url).update_query_dict({"options": f"-csearch_path={schema}"})
    state_url = url.render_as_string(hide_password=False)
    accounts = [Communic8Sandbox() for _ in range(args.accounts)]
    burst = 1
    for sandbox in accounts:
        # the account's own limit, enforced: rate + burst in any second
        sandbox.rate_limit = RateLimit(limit=int(args.rate) + burst, window=1.0, sliding=True)
    people = [f"p{i:05d}@example.com" for i in range(args.members * 10)]
    for sandbox in accounts:
        for email in people:
            sandbox.add_recipient(email)
    groups = [
        {"name": f"Group {g:03d}", "members": people[(g * 3) % len(people) :][: args.members]}
        for g in range(args.groups)
    ]
    try:
        with (
            ServerThread(Mount({f"acct{i}": s for i, s in enumerate(accounts)})) as server,
            tempfile.TemporaryDirectory(prefix="syncd-fleet-") as tmp,
        ):
            providers = [
                {
                    "name": f"acct{i}",
                    "type": "communic8",
                    "base_url": f"{server.url}/acct{i}/int/v1",
                    "token": KEY,
                    "rate_limit": args.rate,
                    "burst": burst,
                    "max_concurrency": 4,
                }
                for i in range(args.accounts)
            ]
            # The replicas start just after a whole minute (the shared cron's tick): each catches up on that tick
            # at once, so the first measured period is the first sync, from that minute on.
            started_on = (int(time.time() // PERIOD) + 1) * PERIOD
            time.sleep(max(0.0, started_on + 0.2 - time.time()))
            replicas: list[tuple[subprocess.Popen[bytes], Path]] = []
            for r in range(args.replicas):
                cfg = {
                    "state": {"url": state_url},
                    "schedule": {"every": "1m"},
                    "server": {"listen": f"127.0.0.1:{free_port()}", "workers": 8, "stalled_after": "15s"},
                    "providers": providers,
                    "groups": groups,
                }
                path = Path(tmp) / f"replica{r}.yaml"
                path.write_text(yaml.safe_dump(cfg))
                replicas.append((start_replica(path, Path(tmp) / f"replica{r}.log"), Path(tmp) / f"replica{r}.log"))
            first = started_on
            kill_at = first + args.kill_after  # while the first period's passes are under way
            end = first + PERIOD * args.periods
            killed_at: float | None = None
            while time.time() < end + 5:
                if killed_at is None and time.time() >= kill_at:
                    victim = replicas[0][0]
                    victim.send_signal(signal.SIGKILL)
                    victim.wait()
                    killed_at = time.time()
                time.sleep(0.5)
            for proc, _ in replicas[1:]:
                proc.send_signal(signal.SIGTERM)
            for proc, _ in replicas[1:]:
                proc.wait(timeout=60)
            return report(args, state_url, accounts, groups, first, killed_at)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def report(
    args: argparse.Namespace,
    state_url: str,
    accounts: list[Communic8Sandbox],
    groups: list[dict[str, Any]],
    first: float,
    killed_at: float | None,
) -> dict[str, Any]:
    engine = sa.create_engine(state_url)
    with engine.begin() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT p.group_name, p.provider, extract(epoch FROM r.started_at), p.added + p.removed FROM "
                "pair_results p JOIN runs r ON r.id = p.run_id WHERE r.finished_at IS NOT NULL"
            )
        ).all()
    engine.dispose()
    per_period: dict[tuple[str, str, int], int] = Counter()
    changed: dict[tuple[str, str, int], int] = Counter()  # runs that made changes
    for group, provider, started, changes in rows:
        period = int((float(started) - first) // PERIOD)
        if 0 <= period < args.periods:
            per_period[(group, provider, period)] += 1
            changed[(group, provider, period)] += 1 if changes else 0
    pairs = [(g["name"], f"acct{i}") for g in groups for i in range(args.accounts)]
    counts = Counter(per_period.get((g, p, period), 0) for g, p in pairs for period in range(args.periods))
    applied = Counter(changed.get((g, p, period), 0) for g, p in pairs for period in range(args.periods))
    first_sync = Counter(changed.get((g, p, 0), 0) for g, p in pairs)
    accounts_out = []
    duplicate_groups = duplicate_members = 0
    for i, sandbox in enumerate(accounts):
        names = Counter(g["name"] for g in sandbox.groups.values())
        duplicate_groups += sum(n - 1 for n in names.values() if n > 1)
        sent: dict[str, Counter[str]] = defaultdict(Counter)
        for r in sandbox.requests:
            if r.method == "POST" and r.path.endswith("/recipients") and r.status == 200:
                body = json.loads(r.body or b"{}")
                for email in body.get("recipientEmails", []):
                    sent[r.path][email.lower()] += 1
        duplicate_members += sum(n - 1 for per in sent.values() for n in per.values() if n > 1)
        served = sorted(r.at for r in sandbox.requests if r.path.startswith("/int/v1/"))
        most = max((sum(1 for t in served[j:] if t < s + 1.0) for j, s in enumerate(served)), default=0)
        in_first = [t for t in served if first <= t < first + PERIOD]
        synced_after = (in_first[-1] - first) if in_first else None
        lower_bound = max(0.0, (len(in_first) - 1) / args.rate)  # the first request needs no token wait
        accounts_out.append(
            {
                "account": f"acct{i}",
                "requests": len(served),
                "answered_429": sum(1 for r in sandbox.requests if r.status == 429),
                "most_in_any_second": most,
                "limit_per_second": int(args.rate) + 1,
                "first_period_requests": len(in_first),
                "first_period_last_request_at_s": round(synced_after, 1) if synced_after is not None else None,
                "lower_bound_s": round(lower_bound, 1),
                "ratio": round(synced_after / lower_bound, 2) if synced_after and lower_bound else None,
            }
        )
    return {
        "pairs": len(pairs),
        "replicas": args.replicas,
        "periods": args.periods,
        "killed_one_replica_at_s_into_first_period": round(killed_at - first, 1) if killed_at else None,
        "completed_runs_per_pair_and_period": {str(k): v for k, v in sorted(counts.items())},
        "runs_that_made_changes_per_pair_and_period": {str(k): v for k, v in sorted(applied.items())},
        "first_period_pairs_synced_by_exactly_one_run": first_sync.get(1, 0),
        "every_pair_applied_once": first_sync == Counter({1: len(pairs)}) and set(applied) <= {0, 1},
        "duplicate_groups": duplicate_groups,
        "duplicate_member_writes": duplicate_members,
        "answered_429_total": sum(a["answered_429"] for a in accounts_out),
        "max_requests_in_any_second_vs_limit": [
            max(a["most_in_any_second"] for a in accounts_out),
            int(args.rate) + 1,
        ],
        "accounts": accounts_out,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg-url", required=True, help="a PostgreSQL database (a schema is created in it)")
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--accounts", type=int, default=10, help="provider accounts, each with its own limit")
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--members", type=int, default=5, help="members per group")
    parser.add_argument("--rate", type=float, default=5.0, help="each account's requests per second")
    parser.add_argument("--periods", type=int, default=2, help="schedule periods (minutes) to run")
    parser.add_argument("--kill-after", type=float, default=10.0, help="seconds into the first period to kill one")
    print(json.dumps(run(parser.parse_args()), indent=2))


if __name__ == "__main__":
    main()
