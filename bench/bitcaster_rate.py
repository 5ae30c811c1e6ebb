"""Benchmark: N new members (default 5,000) into one Bitcaster list at the API's 30 requests per 60 s.

Runs the Bitcaster connector against its sandbox with the sandbox's throttle ON (30 per 60 s per key, sliding)
and the connector's default pacing (burst 1, 29/60 requests/s), as one pass would: find the list by name, read
its members, add the missing ones in batches of `max_add_batch`. Prints the requests it took, any 429s, and the
time against the lower bound requests / (30 per 60 s). `--bad K` makes K of the addresses unknown to Bitcaster
(spread evenly) to show what isolating them by halving costs.

By default time is virtual (a clock shared by the connector's token bucket and the sandbox's throttle that
sleeping advances), so the run is instant and exact; `--real` waits for real (about 20 s for 5,000 members).

    .venv/bin/python bench/bitcaster_rate.py [--members 5000] [--bad 0] [--batch 500] [--real]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import httpx

from connectors.base import Contact
from connectors.bitcaster import PACING, BitcasterSettings, build
from connectors.http import TokenBucket, count_requests
from connectors.sandbox.bitcaster import (
    API,
    DEFAULT_KEY,
    DEFAULT_ORG,
    DEFAULT_PROJECT,
    RATE_LIMIT,
    RATE_WINDOW,
    BitcasterSandbox,
)
from connectors.settings import BuildContext


class VirtualTime:
    """Real monotonic time plus whatever sleeping added: ApiClient's Retry-After pause shares the timeline."""

    def __init__(self) -> None:
        self.offset = 0.0

    def clock(self) -> float:
        return time.monotonic() + self.offset

    async def sleep(self, seconds: float) -> None:
        self.offset += max(0.0, seconds)
        await asyncio.sleep(0)


async def one(members: int, bad: int, batch: int, real: bool) -> dict[str, Any]:
    vt = VirtualTime()
    clock = time.monotonic if real else vt.clock
    sandbox = BitcasterSandbox(clock=clock)
    emails = [f"bench{i:06d}@example.com" for i in range(members)]
    step = members // bad if bad else 0
    unknown = {emails[i * step + step // 2] for i in range(bad)} if bad else set()
    for e in emails:
        if e not in unknown:
            sandbox.add_address(e)
    sandbox.add_list("Bench")
    settings = BitcasterSettings(
        name="bc",
        base_url="http://127.0.0.1" + API,
        token=DEFAULT_KEY,  # pydantic turns the str into a SecretStr
        organization=DEFAULT_ORG,
        project=DEFAULT_PROJECT,
        batch_size=batch,
    )
    c = build(settings, BuildContext(transport=httpx.ASGITransport(app=sandbox)))
    if not real:
        c.api.bucket = TokenBucket(PACING.rate, PACING.burst, clock=vt.clock, sleep=vt.sleep)
    started, wall = clock(), time.perf_counter()
    try:
        with count_requests() as tally:
            group = await c.find_group(name="Bench")
            assert group is not None
            await c.read_members(group)
            size = c.capabilities.max_add_batch
            people = [Contact(e) for e in emails]
            rejected = 0
            for start in range(0, len(people), size):  # the applier hands over one batch at a time
                result = await c.add_members(group, people[start : start + size])
                rejected += len(result.rejected)
    finally:
        await c.aclose()
    elapsed = clock() - started
    requests = tally.read + tally.write
    limit_rate = RATE_LIMIT / RATE_WINDOW
    return {
        "members": members,
        "unknown_addresses": bad,
        "batch": size,
        "clock": "real" if real else "virtual",
        "requests": tally.as_dict(),
        "requests_total": requests,
        "rejected": rejected,
        "added": len(sandbox.list_emails(int(group.id))),
        "http_429": sum(1 for r in sandbox.requests if r.status == 429),
        "elapsed_s": round(elapsed, 1),
        "lower_bound_s (requests / 30 per 60 s)": round(requests / limit_rate, 1),
        "pacing_bound_s ((requests - burst) / rate)": round((requests - PACING.burst) / PACING.rate, 1),
        "cpu_wall_s": round(time.perf_counter() - wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=5000)
    parser.add_argument("--bad", type=int, default=0, help="addresses without a Bitcaster address record")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--real", action="store_true", help="wait for real instead of on a virtual clock")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(one(args.members, args.bad, args.batch, args.real)), indent=2))


if __name__ == "__main__":
    main()
