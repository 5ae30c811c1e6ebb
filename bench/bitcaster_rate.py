"""Benchmark: N new members (default 5,000) into one Bitcaster list under the API's throttle, 30 requests per key
in any 60 s (a sliding window), at the connector's pacing.

Two pacings are compared on the same work:

* `window` (the default since the throttle was measured on a real 3.1.2 server): the sliding window itself,
  `Pacing(window=(30, 60.0))` with a token bucket of 0.5/s and bursts of 30 inside it: up to 30 requests go at
  once, the next when the oldest leaves the window;
* `bucket` (the pacing before): a token bucket of 29/60 requests/s with bursts of 1, i.e. one request every
  2.07 s after the first.

Against the sandbox (default), with its throttle ON and virtual time (a clock shared by the connector's pacing
and the sandbox's throttle, that sleeping advances: instant and exact); `--wall` waits for real. As one pass
would: find the list by name, read its members, add the missing ones in batches of `max_add_batch`. `--bad K`
makes K of the addresses unknown to Bitcaster (spread evenly) to show what isolating them by halving costs:
many more requests than a window holds. The figures printed: requests, 429s, time, and the lower bound
(`ceil(requests / 30) - 1` whole windows: the first 30 need no wait).

`--server` runs against the REAL Bitcaster server the environment describes (`eval "$(real-bitcaster
start)"`; the throttle is reset first through REAL_BITCASTER_THROTTLE_REDIS): it has only a few addresses, so
the work is one `GET d/{pk}/` and `--requests R` (default 59) add requests of one known address each
(re-adding is a 200 that changes nothing), in real time.

    .venv/bin/python bench/bitcaster_rate.py [--members 5000] [--bad 0] [--batch 500] [--wall]
    .venv/bin/python bench/bitcaster_rate.py --server [--requests 59] [--pacing window|bucket|both]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from connectors.base import Contact, Pacing
from connectors.bitcaster import PACING, BitcasterConnector, BitcasterSettings, build
from connectors.http import TokenBucket, count_requests
from connectors.settings import BuildContext
from sandboxes.bitcaster import (
    API,
    DEFAULT_KEY,
    DEFAULT_ORG,
    DEFAULT_PROJECT,
    RATE_LIMIT,
    RATE_WINDOW,
    BitcasterSandbox,
)

ROOT = str(Path(__file__).resolve().parent.parent)
OLD_PACING = Pacing(rate=29 / 60, burst=1, max_concurrency=2)  # the token bucket used before the window
PACINGS = {"window": PACING, "bucket": OLD_PACING}


class VirtualTime:
    """Real monotonic time plus whatever sleeping added: ApiClient's pauses share the timeline."""

    def __init__(self) -> None:
        self.offset = 0.0

    def clock(self) -> float:
        return time.monotonic() + self.offset

    async def sleep(self, seconds: float) -> None:
        self.offset += max(0.0, seconds)
        await asyncio.sleep(0)


def lower_bound(requests: int) -> float:
    """Seconds n requests need at best under 30 per 60 s, starting with an empty window."""
    return (math.ceil(requests / RATE_LIMIT) - 1) * RATE_WINDOW if requests else 0.0


def paced(c: BitcasterConnector, pacing: Pacing, vt: VirtualTime | None) -> None:
    """Give the connector this pacing (on the virtual clock, when there is one)."""
    if vt is None:
        c.api.bucket = TokenBucket(pacing.rate, pacing.burst, window=pacing.window)
    else:
        c.api.bucket = TokenBucket(pacing.rate, pacing.burst, window=pacing.window, clock=vt.clock, sleep=vt.sleep)


async def sandbox_run(members: int, bad: int, batch: int, wall: bool, pacing_name: str) -> dict[str, Any]:
    vt = None if wall else VirtualTime()
    clock = time.monotonic if vt is None else vt.clock
    sandbox = BitcasterSandbox(clock=clock)  # the throttle is on: 30 per 60 s per key, sliding
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
    paced(c, PACINGS[pacing_name], vt)
    started, cpu = clock(), time.perf_counter()
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
    return {
        "pacing": pacing_name,
        "members": members,
        "unknown_addresses": bad,
        "batch": size,
        "clock": "wall" if vt is None else "virtual",
        "requests": tally.as_dict(),
        "requests_total": requests,
        "rejected": rejected,
        "added": len(sandbox.list_emails(int(group.id))),
        "http_429": sum(1 for r in sandbox.requests if r.status == 429),
        "elapsed_s": round(elapsed, 1),
        "lower_bound_s": lower_bound(requests),
        "cpu_wall_s": round(time.perf_counter() - cpu, 2),
    }


async def server_run(requests: int, pacing_name: str) -> dict[str, Any]:
    sys.path.insert(0, ROOT)  # the repository root: tests.real
    from tests.real.harness import flush_throttle, from_environment

    env = from_environment()
    if isinstance(env, str):
        raise SystemExit(f"--server needs a real Bitcaster server: {env}")
    flush_throttle(env.throttle_redis)
    with env.client() as client:  # the list to add to (these two requests are not the benchmark's)
        created = client.post(env.root, json={"name": f"Bench {uuid.uuid4().hex[:8]}"})
        created.raise_for_status()
        gid = str(created.json()["id"])
    flush_throttle(env.throttle_redis)
    settings = BitcasterSettings(
        name="bc", base_url=env.url, token=env.token, organization=env.org, project=env.project, batch_size=1
    )
    statuses: list[int] = []

    class Recording(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await super().handle_async_request(request)
            statuses.append(response.status_code)
            return response

    c = build(settings, BuildContext(transport=Recording()))
    paced(c, PACINGS[pacing_name], None)
    started = time.monotonic()
    try:
        with count_requests() as tally:
            group = await c.find_group(group_id=gid)  # as a pass starts: GET d/{pk}/
            assert group is not None
            for i in range(requests):
                result = await c.add_members(group, [Contact(env.addresses[i % len(env.addresses)])])
                assert result.done and not result.rejected
    finally:
        await c.aclose()
    elapsed = time.monotonic() - started
    sent = tally.read + tally.write
    return {
        "pacing": pacing_name,
        "server": "real Bitcaster 3.1.2",
        "requests_total": sent,
        "http_429": statuses.count(429),
        "elapsed_s": round(elapsed, 1),
        "lower_bound_s": lower_bound(sent),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=5000)
    parser.add_argument("--bad", type=int, default=0, help="addresses without a Bitcaster address record")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--wall", action="store_true", help="wait for real instead of on a virtual clock")
    parser.add_argument("--server", action="store_true", help="against the real server of REAL_BITCASTER_*")
    parser.add_argument("--requests", type=int, default=59, help="--server: add requests to send (after 1 read)")
    parser.add_argument("--pacing", choices=["window", "bucket", "both"], default="both")
    args = parser.parse_args()
    names = ["window", "bucket"] if args.pacing == "both" else [args.pacing]
    for name in names:
        if args.server:
            figures = asyncio.run(server_run(args.requests, name))
        else:
            figures = asyncio.run(sandbox_run(args.members, args.bad, args.batch, args.wall, name))
        print(json.dumps(figures, indent=2), flush=True)
    if not args.server and "REAL_BITCASTER_URL" in os.environ:
        print("(a real server is configured: --server measures against it)", file=sys.stderr)


if __name__ == "__main__":
    main()
