"""Benchmark: a first sync of N new people (default 5,000) into a new Giftronaut group, at the documented
production rate limit of 300 requests/min, against the bundled sandbox enforcing that limit.

Drives the connector the way syncd's applier does (find the group by name, create it, read it, prepare the
adds once, then one add op per member with `max_concurrency` workers) and prints the requests sent, the wall
time, and the lower bound requests / rate. Nothing is asserted.

Real time at 300/min is ~33 minutes for 5,000 people, so by default time is compressed: the client's rate,
the sandbox's window and its simulated latency are all scaled by `--scale` (the sandbox allows 300 requests per
60/scale s, the client paces at 5*scale/s) and the measured wall time is multiplied back. `--scale 1` runs in
real time.

    .venv/bin/python bench/giftronaut_rate.py [--members 5000] [--scale 20] [--latency 0.2] [--existing 0]

At 20x the event loop's own timer overhead shows in the result (about +15% over the lower bound); the README's
figure comes from `--scale 5` (+2%) and, for 300 members, from real time (`--scale 1`, +0.7%).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import httpx

from connectors.base import Contact, MemoryRecipientCache
from connectors.giftronaut import PACING, GiftronautConnector, GiftronautSettings, build
from connectors.http import count_requests
from connectors.settings import BuildContext
from sandboxes._core import Fault, RateLimit
from sandboxes.giftronaut import DEFAULT_CLIENTS, GiftronautSandbox

PER_MINUTE = 300  # documented production limit


async def sync(sb: GiftronautSandbox, contacts: list[Contact], scale: float) -> dict[str, Any]:
    client_id, secret = next(iter(DEFAULT_CLIENTS.items()))
    settings = GiftronautSettings.model_validate(
        {
            "name": "gt",
            "base_url": "http://127.0.0.1/api/v1",
            "client_id": client_id,
            "client_secret": secret,
            "rate_limit": PACING.rate * scale,  # burst and max_concurrency: the defaults
        }
    )
    connector = build(settings, BuildContext(transport=httpx.ASGITransport(app=sb), cache=MemoryRecipientCache()))
    assert isinstance(connector, GiftronautConnector)
    started = time.perf_counter()
    try:
        with count_requests() as tally:
            group = await connector.find_group(name="Bench")
            if group is None:
                group = await connector.create_group("Bench")
            await connector.read_members(group)
            await connector.prepare_adds(contacts)
            pending = iter(contacts)

            async def worker() -> None:
                for contact in pending:  # shared iterator: each op is taken by exactly one worker
                    result = await connector.add_members(group, [contact])
                    assert not result.rejected, result.rejected

            await asyncio.gather(*(worker() for _ in range(PACING.max_concurrency)))
    finally:
        await connector.aclose()
    wall = time.perf_counter() - started
    return {"wall": wall, "read": tally.read, "write": tally.write}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=5000, help="new people to add (default 5000)")
    parser.add_argument("--existing", type=int, default=0, help="of them, how many are recipients already")
    parser.add_argument("--scale", type=float, default=20.0, help="time compression (1 = real time)")
    parser.add_argument("--latency", type=float, default=0.2, help="simulated API latency, seconds (unscaled)")
    args = parser.parse_args()

    sb = GiftronautSandbox(rate_limit=RateLimit(PER_MINUTE, 60 / args.scale))
    if args.latency:
        sb.inject(Fault(status=0, delay=args.latency / args.scale, times=0))  # every answer, after a delay
    emails = [f"bench{i:06d}@example.com" for i in range(args.members)]
    for email in emails[: args.existing]:
        sb.add_recipient(email)
    contacts = [Contact(e, "Bench", "Person") for e in emails]

    out = asyncio.run(sync(sb, contacts, args.scale))
    sent = out["read"] + out["write"]
    rate = PER_MINUTE / 60
    lower = sent / rate
    estimated = out["wall"] * args.scale
    throttled = sum(1 for r in sb.requests if r.status == 429)
    print(
        json.dumps(
            {
                "members": args.members,
                "existing_recipients": args.existing,
                "requests": {"read": out["read"], "write": out["write"], "total": sent},
                "token_requests": sb.token_requests,
                "answered_429": throttled,
                "scale": args.scale,
                "latency_s": args.latency,
                "wall_s_measured": round(out["wall"], 2),
                "wall_s_at_300_per_min": round(estimated, 1),
                "lower_bound_s": round(lower, 1),
                "overhead_vs_lower_bound": f"{(estimated / lower - 1) * 100:+.2f}%",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
