"""Benchmark: a first sync of N new members (default 5,000) into a Stannp group at a plan's rate limit.

Stannp has no bulk create: each new recipient is one `POST /recipients/create` (created and joined in one
request), so a first sync is bound by the plan's requests per minute, not by syncd. This drives the Stannp
connector the way the applier does (find the group, create it, `prepare_adds`, then one `add_members` per
batch of 1000) against the sandbox, whose fixed rate-limit window sends `X-RateLimit-*` headers, and prints
the requests sent, the 429s met, and the time taken against the lower bound requests / (limit per second).

By default time is virtual: the sandbox's window and the connector's token bucket read one simulated clock,
so 5,000 members at 300/min (about 17 minutes of real pacing) take a few seconds to measure. `--clock real`
runs it for real.

    .venv/bin/python bench/stannp_rate.py [--members 5000] [--existing 0] [--limit 300] [--rate R]
                                          [--clock virtual|real]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import httpx
from pydantic import SecretStr

from connectors.base import Contact, MemoryRecipientCache, Pacing, PostalAddress
from connectors.http import ApiKeyBasicAuth, RetryPolicy, count_requests, make_client
from connectors.stannp import CAPABILITIES, StannpConnector
from sandboxes.stannp import DEFAULT_KEY, StannpSandbox

ADDRESS = PostalAddress(line1="1 Test Street", city="Leeds", postcode="LS1 1AA", country="GB")


class VirtualTime:
    def __init__(self) -> None:
        self.now = time.monotonic()  # agrees with anything still timed on time.monotonic()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


async def run(members: int, existing: int, limit: int, rate: float, virtual: bool) -> dict[str, Any]:
    vt = VirtualTime() if virtual else None
    clock = vt.clock if vt else time.monotonic
    sandbox = StannpSandbox(limit=limit, window=60.0, clock=clock)
    people = [f"bench{i:06d}@example.com" for i in range(members)]
    for email in people[:existing]:
        sandbox.add_recipient(email)
    client = make_client(
        "http://127.0.0.1/v1", auth=ApiKeyBasicAuth(SecretStr(DEFAULT_KEY)), transport=httpx.ASGITransport(app=sandbox)
    )
    default = CAPABILITIES.pacing
    connector = StannpConnector(
        "stannp",
        client,
        pacing=Pacing(rate=rate, burst=default.burst, max_concurrency=default.max_concurrency),
        retry=RetryPolicy(jitter=0),
        cache=MemoryRecipientCache(),
        clock=vt.clock if vt else None,
        sleep=vt.sleep if vt else None,
    )
    contacts = [Contact(email=e, first_name="Bench", last_name="Person", address=ADDRESS) for e in people]
    batch = CAPABILITIES.max_add_batch
    started, wall = clock(), time.perf_counter()
    try:
        with count_requests() as tally:
            group = await connector.find_group(name="Bench") or await connector.create_group("Bench")
            await connector.prepare_adds(contacts)
            done = 0
            for i in range(0, len(contacts), batch):
                result = await connector.add_members(group, contacts[i : i + batch])
                done += len(result.done)
    finally:
        await connector.aclose()
    took = clock() - started
    sent = tally.read + tally.write
    limited = sum(1 for r in sandbox.requests if r.status == 429)
    return {
        "members": members,
        "existing": existing,
        "added": done,
        "requests": tally.as_dict(),
        "http_requests": len(sandbox.requests),
        "429s": limited,
        "seconds": took,
        "lower_bound_seconds": sent / (limit / 60.0),
        "real_seconds": time.perf_counter() - wall,
        "in_group": len(sandbox.group_ids(group.id)),
        "recipients": sandbox.recipient_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=5000)
    parser.add_argument("--existing", type=int, default=0, help="how many of them exist as recipients already")
    parser.add_argument("--limit", type=int, default=300, help="the plan's requests per minute (300/600/2000/3000)")
    parser.add_argument("--rate", type=float, default=None, help="the connector's rate_limit (default: limit / 60)")
    parser.add_argument("--clock", choices=("virtual", "real"), default="virtual")
    args = parser.parse_args()
    rate = args.rate if args.rate is not None else args.limit / 60.0
    out = asyncio.run(run(args.members, args.existing, args.limit, rate, args.clock == "virtual"))
    kind = "simulated" if args.clock == "virtual" else "wall-clock"
    print(
        f"stannp first sync: {out['members']} members ({out['existing']} existing) at {args.limit}/min, "
        f"rate_limit {rate:g}/s"
    )
    print(
        f"  requests: {out['requests']['read']} read + {out['requests']['write']} write "
        f"({out['http_requests']} HTTP incl. retries), 429s: {out['429s']}"
    )
    print(
        f"  time: {out['seconds']:.1f} s {kind} ({out['seconds'] / 60:.1f} min); lower bound requests/rate "
        f"{out['lower_bound_seconds']:.1f} s; ratio {out['seconds'] / out['lower_bound_seconds']:.3f}"
    )
    print(f"  added {out['added']}, group holds {out['in_group']}, account has {out['recipients']} recipients")
    print(f"  benchmark ran in {out['real_seconds']:.1f} s real time")


if __name__ == "__main__":
    main()
