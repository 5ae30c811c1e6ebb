"""The inline `groups:` of the config file as a source of desired groups.

Its settings are the config's own `groups:` key (`syncd.config.models.GroupSpec`): the `Config` root declares
it, so it cannot live here, and it is no `sources:` entry type, so it is not in `syncd.sources.registry`;
`build_sources` always puts this source first.
"""

from __future__ import annotations

from collections.abc import Sequence

from syncd.config import Config
from syncd.model import DesiredGroup, Target
from syncd.planning import admit
from syncd.sources.base import CheckLine


class YamlSource:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.name = f"yaml:{config.path.name}"

    @property
    def group_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.config.groups)

    async def read(self) -> Sequence[DesiredGroup]:
        groups = []
        for spec in self.config.groups:
            members, rejected = admit(m.to_contact() for m in spec.members)
            groups.append(
                DesiredGroup(
                    name=spec.name,
                    members=members,
                    rejected=rejected,
                    targets=tuple(Target(t.provider, t.group_id) for t in self.config.targets_of(spec)),
                    source=self.name,
                    removal_policy=spec.removal_policy,
                    max_removals=spec.max_removals,
                    max_removal_ratio=spec.max_removal_ratio,
                    key=spec.key or spec.name,
                    protected=frozenset(spec.protected),
                    exclude=tuple(spec.exclude),
                )
            )
        return groups

    async def check(self) -> list[CheckLine]:
        return []  # the config's own groups: nothing to reach
