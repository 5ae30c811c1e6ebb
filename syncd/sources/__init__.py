"""Where desired groups come from. Every source yields `DesiredGroup`s; the reconciler does not care which.

* `yaml`: the inline `groups:` of the config file;
* `hubspot`: HubSpot lists (`sources: [{type: hubspot, …}]`);
* `sql`: one query against any database SQLAlchemy reaches (`sources: [{type: sql, …}]`).

Each `sources:` entry type is a module owning its settings model, found through `syncd.sources.registry`.
`build_sources(config)` builds them all from the config; `read_sources` reads them for one pass. A source that
fails raises `SourceError`, and the pass then leaves every group of that source untouched (fail closed: an
empty or broken read must never look like "remove everyone"); see `syncd.sources.base`.
"""

from __future__ import annotations

import httpx

from connectors.http import RequestHooks
from syncd.config import Config
from syncd.sources.base import CheckLine, LastPass, PartialRead, ReadResult, Source, SourceContext, read_sources
from syncd.sources.hubspot import HubSpotSource
from syncd.sources.registry import SOURCES, SourceSpec, build_source
from syncd.sources.sql import SqlSource
from syncd.sources.yaml import YamlSource


def build_sources(
    config: Config,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    hooks: RequestHooks | None = None,
) -> list[Source]:
    """The inline groups, then every entry of `sources:` in file order. `transport` (tests: an ASGI transport
    bound to a sandbox) and `hooks` (syncd's metrics) go to the sources that speak HTTP."""
    sources: list[Source] = [YamlSource(config)]
    for entry, name in zip(config.sources, config.source_names(), strict=True):
        sources.append(build_source(entry, config, SourceContext(name, transport, hooks)))
    return sources


__all__ = [
    "SOURCES",
    "CheckLine",
    "HubSpotSource",
    "LastPass",
    "PartialRead",
    "ReadResult",
    "Source",
    "SourceContext",
    "SourceSpec",
    "SqlSource",
    "YamlSource",
    "build_source",
    "build_sources",
    "read_sources",
]
