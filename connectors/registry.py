"""Every provider type syncd knows: its settings model and its connector factory.

syncd's config loader builds its `providers` union from this table and the reconciler builds connectors
through it, which is how the engine stays free of provider names.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connectors import bitcaster, cleverreach, communic8, giftronaut, stannp
from connectors.base import Connector
from connectors.http import ApiClient
from connectors.settings import BuildContext, ProviderSettings


@dataclass(frozen=True)
class ProviderSpec:
    type: str
    settings: builtins.type[ProviderSettings]
    build: Callable[[Any, BuildContext], Connector]


PROVIDERS: dict[str, ProviderSpec] = {
    spec.type: spec
    for spec in (
        ProviderSpec("giftronaut", giftronaut.GiftronautSettings, giftronaut.build),
        ProviderSpec("communic8", communic8.Communic8Settings, communic8.build),
        ProviderSpec("stannp", stannp.StannpSettings, stannp.build),
        ProviderSpec("bitcaster", bitcaster.BitcasterSettings, bitcaster.build),
        ProviderSpec("cleverreach", cleverreach.CleverReachSettings, cleverreach.build),
    )
}


def build_connector(settings: ProviderSettings, ctx: BuildContext) -> Connector:
    """The connector of this provider entry. Its `capabilities` are the ones configured, pacing included
    (`ProviderSettings.capabilities`, applied by its `build`), so the engine sizes batches and its own
    concurrency to what is in force. A context that brings a `limiter` replaces the connector's own pacing with
    it (every connector sends through its `api`, an `ApiClient`)."""
    connector = PROVIDERS[settings.type].build(settings, ctx)
    api = getattr(connector, "api", None)
    if ctx.limiter is not None and isinstance(api, ApiClient):
        api.bucket = ctx.limiter(settings.name, connector.capabilities.pacing)
    return connector
