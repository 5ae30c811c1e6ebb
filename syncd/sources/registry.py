"""Every source type a `sources:` entry can name: its settings model and its factory.

syncd's config loader builds the `sources` union from this table when it loads a file
(`syncd.config.loading.config_model`), and `build_sources` builds each entry's source through it, which is
how the config and the reconciler stay free of source names. Adding a source type is its module (a
`SourceSettings` subclass with its `type` Literal, a factory, a class with `read` and `check`) and one line
here.

The inline `groups:` of the config file are no entry of this table: they are the config's own key (their
models are `syncd.config.models.GroupSpec`), always read first by `YamlSource`.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from syncd.config import Config, SourceSettings
from syncd.sources import hubspot, sql
from syncd.sources.base import Source, SourceContext


@dataclass(frozen=True)
class SourceSpec:
    type: str  # the `type` of a `sources:` entry; the Literal of `settings.type`
    settings: builtins.type[SourceSettings]
    build: Callable[[Any, Config, SourceContext], Source]


SOURCES: dict[str, SourceSpec] = {
    spec.type: spec
    for spec in (
        SourceSpec("hubspot", hubspot.HubSpotSourceSettings, hubspot.build),
        SourceSpec("sql", sql.SqlSourceSettings, sql.build),
    )
}


def build_source(settings: SourceSettings, config: Config, ctx: SourceContext) -> Source:
    return SOURCES[settings.type].build(settings, config, ctx)
