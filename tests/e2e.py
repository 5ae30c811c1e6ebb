"""A small world for end-to-end tests: Communic8 and CleverReach sandboxes mounted side by side, a config
file written to disk, a real SQLite state DB, and the reconciler talking HTTP to the sandboxes over an
in-process ASGI transport (CLI tests use a real loopback server instead: see tests/test_cli.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from sandboxes._core import Mount
from sandboxes.cleverreach import CleverReachSandbox
from sandboxes.communic8 import DEFAULT_KEYS, Communic8Sandbox
from syncd.config import Config, load_config
from syncd.metrics import Metrics
from syncd.model import RunReport
from syncd.reconciler import PassOptions, Reconciler
from syncd.state import Store

SERVER = "http://127.0.0.1"
C8_TOKEN = next(iter(DEFAULT_KEYS.values()))
CR_CLIENT, CR_SECRET = "e2e-client", "e2e-secret"


def provider_entries(server: str = SERVER, **extra: Any) -> list[dict[str, Any]]:
    fast = {"rate_limit": 1e6, "retry": {"backoff_base": 0}, **extra}
    return [
        {
            "name": "c8",
            "type": "communic8",
            "base_url": f"{server}/communic8/int/v1",
            "token": C8_TOKEN,
            **fast,
        },
        {
            "name": "cr",
            "type": "cleverreach",
            "base_url": f"{server}/cleverreach/v3",
            "client_id": CR_CLIENT,
            "client_secret": CR_SECRET,
            **fast,
        },
    ]


@dataclass
class World:
    tmp: Path
    c8: Communic8Sandbox = field(default_factory=Communic8Sandbox)
    cr: CleverReachSandbox = field(default_factory=lambda: CleverReachSandbox(clients={CR_CLIENT: CR_SECRET}))
    metrics: Metrics = field(default_factory=Metrics)

    @property
    def app(self) -> Mount:
        return Mount({"communic8": self.c8, "cleverreach": self.cr})

    def people(self, emails: Sequence[str]) -> None:
        """Make people known to Communic8 (it cannot create recipients)."""
        for e in emails:
            self.c8.add_recipient(e)

    def write_config(self, groups: list[dict[str, Any]], **top: Any) -> Path:
        cfg: dict[str, Any] = {"state": {"url": f"sqlite:///{self.tmp}/state.db"}}
        providers = top.pop("providers", None) or provider_entries(**top.pop("provider_extra", {}))
        cfg.update(top)
        cfg["providers"] = providers
        cfg["groups"] = groups
        path = self.tmp / "syncd.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def config(self, groups: list[dict[str, Any]], **top: Any) -> Config:
        return load_config(self.write_config(groups, **top))

    async def run(self, config: Config, **options: Any) -> RunReport:
        store = Store.open(config.state.url)
        try:
            transport = httpx.ASGITransport(app=self.app)
            reconciler = Reconciler(config, store, self.metrics, transport=transport)
            return await reconciler.run(PassOptions(**options))
        finally:
            store.close()

    def mutating(self) -> int:
        return self.c8.mutating_count + self.cr.mutating_count

    def clear_logs(self) -> None:
        self.c8.clear_log()
        self.cr.clear_log()

    def store(self, config: Config) -> Store:
        return Store.open(config.state.url)


def emails(n: int, prefix: str = "m") -> list[str]:
    return [f"{prefix}{i:05d}@example.com" for i in range(n)]
