"""Whole passes into Giftronaut, Stannp and Bitcaster: the request counts the issue asks for, through the real
reconciler (config file, state DB, planner, applier), not just the connector."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from connectors.base import PostalAddress
from sandboxes._core import Fault, Mount
from sandboxes.bitcaster import DEFAULT_KEY as BC_KEY
from sandboxes.bitcaster import DEFAULT_ORG, DEFAULT_PROJECT, BitcasterSandbox
from sandboxes.giftronaut import DEFAULT_CLIENTS, GiftronautSandbox
from sandboxes.stannp import DEFAULT_KEY as SP_KEY
from sandboxes.stannp import StannpSandbox
from syncd.config import load_config
from syncd.metrics import Metrics
from syncd.model import PairStatus, RunReport
from syncd.reconciler import PassOptions, Reconciler
from syncd.state import Store

GT_ID, GT_SECRET = next(iter(DEFAULT_CLIENTS.items()))
FAST = {"rate_limit": 1e6, "burst": 1000, "retry": {"backoff_base": 0}}
BC_FAST = {**FAST, "throttle_requests": None}  # no sliding-window pacing (the sandbox's throttle is off too)
ADDRESS = PostalAddress("1 Main St", None, "Leeds", "LS1 1AA", "GB")


class Providers:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.gt = GiftronautSandbox()
        self.sp = StannpSandbox(limit=None)
        self.bc = BitcasterSandbox()
        self.bc.rate_limit = None
        self.metrics = Metrics()

    def config(self, groups: list[dict[str, Any]]) -> Path:
        base = "http://127.0.0.1"
        cfg = {
            "state": {"url": f"sqlite:///{self.tmp}/state.db"},
            "providers": [
                {
                    "name": "gt",
                    "type": "giftronaut",
                    "base_url": f"{base}/gt/api/v1",
                    "client_id": GT_ID,
                    "client_secret": GT_SECRET,
                    **FAST,
                },
                {"name": "sp", "type": "stannp", "base_url": f"{base}/sp/v1", "api_key": SP_KEY, **FAST},
                {
                    "name": "bc",
                    "type": "bitcaster",
                    "base_url": f"{base}/bc/api",
                    "token": BC_KEY,
                    "organization": DEFAULT_ORG,
                    "project": DEFAULT_PROJECT,
                    **BC_FAST,
                },
            ],
            "groups": groups,
        }
        path = self.tmp / "syncd.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    async def run(self, path: Path, **options: Any) -> RunReport:
        config = load_config(path)
        store = Store.open(config.state.url)
        try:
            app = Mount({"gt": self.gt, "sp": self.sp, "bc": self.bc})
            reconciler = Reconciler(config, store, self.metrics, transport=httpx.ASGITransport(app=app))
            return await reconciler.run(PassOptions(**options))
        finally:
            store.close()


@pytest.fixture
def env(tmp_path: Path) -> Providers:
    return Providers(tmp_path)


def emails(n: int, prefix: str = "m") -> list[str]:
    return [f"{prefix}{i:05d}@example.com" for i in range(n)]


def postal(email: str) -> dict[str, Any]:
    return {
        "email": email,
        "first_name": "P",
        "last_name": "Q",
        "address": {
            "line1": ADDRESS.line1,
            "city": ADDRESS.city,
            "postcode": ADDRESS.postcode,
            "country": ADDRESS.country,
        },
    }


async def test_giftronaut_n_new_members_cost_n_creates_and_n_adds_and_then_nothing(env: Providers) -> None:
    people = emails(40)
    path = env.config([{"name": "Team", "members": people, "targets": ["gt"]}])
    (p,) = (await env.run(path)).pairs
    assert (p.status, p.add) == (PairStatus.APPLIED, 40)
    creates = env.gt.count(method="POST", path=r"/recipients$")
    adds = env.gt.count(method="POST", path=r"/members$")
    assert (creates, adds) == (40, 40)
    assert env.gt.count(method="POST", path=r"/recipient-groups$") == 1
    assert p.requests["write"] == 1 + 40 + 40 == env.gt.mutating_count
    env.gt.clear_log()
    (again,) = (await env.run(path)).pairs
    assert again.status is PairStatus.IN_SYNC and again.requests["write"] == 0
    assert env.gt.count(path=r"/recipients") == 0  # no recipient resolved again
    # a new member next pass: its id is resolved or created, the 40 known ones never looked up again
    path = env.config([{"name": "Team", "members": [*people, "late@example.com"], "targets": ["gt"]}])
    env.gt.clear_log()
    (late,) = (await env.run(path)).pairs
    assert late.add == 1 and env.gt.count(method="POST", path=r"/recipients$") == 1


async def test_giftronaut_killed_and_restarted_sync_duplicates_nothing(env: Providers) -> None:
    people = emails(30)
    path = env.config([{"name": "Team", "members": people, "targets": ["gt"]}])
    # after 12 member adds went through, every further request hangs until the pass is killed
    env.gt.inject(Fault(status=0, delay=60, path=r"/members$", skip=12, times=0))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(env.run(path), timeout=2)
    env.gt.faults.clear()
    (p,) = (await env.run(path)).pairs
    assert p.status is PairStatus.APPLIED
    assert len(env.gt.groups) == 1
    (gid,) = env.gt.groups
    assert env.gt.group_emails(gid) == set(people)
    assert env.gt.recipient_count() == 30  # every person exists exactly once


async def test_stannp_k_new_and_m_existing_cost_k_plus_ceil_m_over_batch_writes(env: Providers) -> None:
    existing, new = emails(2500, "old"), emails(3, "new")
    for e in existing:
        env.sp.add_recipient(e)
    members = [postal(e) for e in existing[:1000]] + [postal(e) for e in new] + [postal(e) for e in existing[1000:]]
    path = env.config([{"name": "Post", "members": members, "targets": ["sp"]}])
    (p,) = (await env.run(path)).pairs
    assert (p.status, p.add) == (PairStatus.APPLIED, 2503)
    assert env.sp.count(path="groups/add") == 3  # ceil(2500 / 1000), the new ones not in between
    assert env.sp.count(path="recipients/create") == 3  # the UK API (a loopback base_url): recipients/create
    assert p.requests["write"] == 1 + 3 + 3  # the group create, k creates, ceil(m / 1000) adds
    assert not any(b"delete_recipients" in r.body and b"true" in r.body for r in env.sp.requests)
    (gid,) = env.sp.groups
    assert len(env.sp.group_emails(gid)) == 2503 and env.sp.recipient_count() == 2503


async def test_stannp_members_without_postal_fields_are_rejected_with_the_reason(env: Providers) -> None:
    path = env.config([{"name": "Post", "members": [postal("a@example.com"), "b@example.com"], "targets": ["sp"]}])
    (p,) = (await env.run(path)).pairs
    assert p.add == 1
    assert [(r.email, r.reason) for r in p.rejected] == [
        (
            "b@example.com",
            "missing fields sp requires: address.city, address.country, address.line1, address.postcode, "
            "first_name, last_name",
        )
    ]
    assert not any(b"b@example.com" in r.body for r in env.sp.requests)


async def test_bitcaster_removals_are_drift_and_bad_addresses_are_isolated(
    env: Providers, caplog: pytest.LogCaptureFixture
) -> None:
    good = emails(98)
    bad = ["nobody1@example.com", "nobody2@example.com"]
    for e in [*good, "leaver@example.com"]:
        env.bc.add_address(e)
    list_id = env.bc.add_list("Team", ["leaver@example.com"])
    members = good[:40] + bad[:1] + good[40:70] + bad[1:] + good[70:]
    path = env.config([{"name": "Team", "members": members, "targets": ["bc"], "removal_policy": "mirror"}])
    with caplog.at_level(logging.INFO):
        report = await env.run(path)
    (p,) = report.pairs
    assert sorted(r.email for r in p.rejected) == bad
    assert set(env.bc.list_emails(list_id)) == {*good, "leaver@example.com"}
    assert env.bc.count(path="/add/") <= 1 + 2 * 2 * 7  # 1 + 2·k·⌈log2 n⌉ = 29 with n = 100, k = 2
    # the pair did all the API allows: applied, the drift it cannot remove counted beside it; not a failure
    assert (p.status, p.add, p.remove, p.unsupported_remove) == (PairStatus.APPLIED, 98, 0, 1)
    assert p.as_dict()["unsupported_remove"] == 1 and report.ok and report.outcome == "success"
    assert env.metrics.drift.labels("Team", "bc", "remove")._value.get() == 1
    assert env.metrics.unremovable.labels("Team", "bc")._value.get() == 1  # for its own warning, not a failure
    assert env.metrics.runs.labels("success")._value.get() == 1 and env.metrics.runs.labels("failure")._value.get() == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("1 removals unsupported by the API" in w for w in warnings)
    assert not any("leaver" in r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)


async def test_bitcaster_missing_list_fails_the_pair_saying_what_to_create(env: Providers) -> None:
    env.bc = BitcasterSandbox(release="legacy")  # an older release: POST d/ answers 405 (3.1.2 creates the list)
    env.bc.rate_limit = None
    env.bc.add_address("a@example.com")
    path = env.config([{"name": "Nowhere", "members": ["a@example.com"], "targets": ["bc"]}])
    (p,) = (await env.run(path)).pairs
    assert p.status is PairStatus.FAILED
    assert "create it in bc" in (p.error or "") and env.bc.mutating_count == 0


async def test_an_unsupported_removal_is_written_down_once_not_every_pass(env: Providers) -> None:
    env.bc.add_address("stay@example.com")
    env.bc.add_list("Team", ["stay@example.com", "leaver@example.com"])
    path = env.config(
        [{"name": "Team", "members": ["stay@example.com"], "targets": ["bc"], "removal_policy": "mirror"}]
    )
    for _ in range(3):
        (p,) = (await env.run(path)).pairs
        assert (p.status, p.unsupported_remove) == (PairStatus.IN_SYNC, 1)
    await env.run(path, dry_run=True)
    config = load_config(path)
    with Store.open(config.state.url) as store:
        rows = list(store.history(member="leaver@example.com"))
    assert [(r.op, r.outcome) for r in rows] == [("remove", "unsupported")]  # one row, when it started
