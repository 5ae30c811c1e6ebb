"""A dry run says what the real run will do: same adds, removes and rejects, made from the same reads.

Against the demo's world (every provider sandbox and the HubSpot source, with the members that go wrong: a
person Communic8 and Bitcaster do not know, one without a postal address, duplicates, an invalid email), a dry
run and the real run that follows on the unchanged world are compared pair by pair, field by field. The only
provider whose rejects a dry run cannot know is Bitcaster (its all-or-nothing add is the only way to learn an
address has no record): there the dry run says how many adds it could not check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from sandboxes.world import build_crms, build_world, mount
from syncd.config import load_config
from syncd.demo import EMAIL_PROVIDERS, demo_config
from syncd.metrics import Metrics
from syncd.model import PairResult, PairStatus, RunReport
from syncd.reconciler import PassOptions, Reconciler
from syncd.state import Store

PROVIDERS = ("c8", "cr", "gt", "sp", "bc")


async def dry_then_real(tmp_path: Path) -> tuple[RunReport, RunReport, int]:
    world, crms = build_world(), build_crms(targets=EMAIL_PROVIDERS)
    app = mount(world, crms)
    path = tmp_path / "syncd.yaml"
    path.write_text(yaml.safe_dump(demo_config(world, "http://127.0.0.1", f"sqlite:///{tmp_path}/s.db", crms)))
    config = load_config(path)
    store = Store.open(config.state.url)
    try:
        reconciler = Reconciler(config, store, Metrics(), transport=httpx.ASGITransport(app=app))
        dry = await reconciler.run(PassOptions(dry_run=True))
        mutating = sum(p.app.mutating_count for p in world)
        real = await reconciler.run(PassOptions())
    finally:
        store.close()
    return dry, real, mutating


def compared(p: PairResult) -> dict[str, Any]:
    """Everything a dry run must predict of a pair (the status and the writes are what differ by design; the reads
    are compared per provider: a read several pairs share is counted on whichever pair made it first, and the
    pairs of a pass run concurrently)."""
    out = p.as_dict()
    for key in ("status", "unchecked_add", "requests"):
        out.pop(key, None)
    return out


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_dry_run_reports_what_the_real_run_then_does(tmp_path: Path, provider: str) -> None:
    dry, real, mutating = await dry_then_real(tmp_path)
    assert mutating == 0  # not one mutating request in the dry run, at any provider
    pairs = [(d, r) for d, r in zip(dry.pairs, real.pairs, strict=True) if d.provider == provider]
    assert pairs
    for d, r in pairs:
        assert (d.group, d.provider) == (r.group, r.provider)
        assert d.status is (PairStatus.PENDING if r.status is PairStatus.APPLIED else r.status)
        if provider == "bc":  # only adding tells: the dry run says how many adds it could not check
            assert d.unchecked_add == d.add and r.unchecked_add == 0
            refused = [x for x in r.rejected if x not in d.rejected]
            assert r.add + len(refused) == d.add
            assert {x.code for x in refused} <= {"unknown_address"}
            continue
        assert d.unchecked_add == 0
        assert compared(d) == compared(r)
    if provider != "bc":  # the dry run makes every read the real run makes
        assert sum(d.requests["read"] for d, _ in pairs) == sum(r.requests["read"] for _, r in pairs)


async def test_the_bitcaster_dry_run_says_it_cannot_know_which_adds_would_be_refused(tmp_path: Path) -> None:
    dry, real, _ = await dry_then_real(tmp_path)
    (d,) = [p for p in dry.pairs if (p.group, p.provider) == ("US Sales Team", "bc")]
    (r,) = [p for p in real.pairs if (p.group, p.provider) == ("US Sales Team", "bc")]
    assert d.as_dict()["unchecked_add"] == 4 and "unchecked_add" not in r.as_dict()
    assert [x.email for x in r.rejected if x.code == "unknown_address"] == ["zoe@example.com"]
