"""`syncd validate --online`: do the credentials work, and does every target group exist (or can it be made)?

It only reads: no group is created, no member touched.
"""

from __future__ import annotations

from typing import TextIO

from connectors.base import ConnectorError, GroupCreationProbe
from connectors.registry import build_connector
from connectors.settings import BuildContext
from syncd.config import Config
from syncd.sources import CheckLine, build_sources
from syncd.state import Store


async def check_online(config: Config, out: TextIO) -> int:
    """Print one line per provider and per (group, provider) pair; return how many problems were found."""
    problems = 0
    store = Store.open(config.state.url)
    try:
        for settings in config.providers:
            try:
                connector = build_connector(settings, BuildContext())
            except Exception as exc:  # e.g. an invalid proxy in the environment
                problems += 1
                print(f"{settings.name}: cannot be used: {type(exc).__name__}: {exc}", file=out)
                continue
            try:
                pairs = [
                    (g, t) for g, targets in config.group_targets() for t in targets if t.provider == settings.name
                ]
                try:
                    await connector.find_group(name="syncd credentials check")
                except ConnectorError as exc:
                    problems += 1
                    print(f"{settings.name}: cannot use the API: {exc}", file=out)
                    continue
                print(f"{settings.name}: credentials ok", file=out)
                for group, target in pairs:
                    binding = store.binding(group, settings.name)
                    gid = target.group_id or (binding.remote_id if binding else None)
                    try:
                        remote = await connector.find_group(group_id=gid) if gid else None
                        if remote is None and not target.group_id:
                            remote = await connector.find_group(name=group)
                    except ConnectorError as exc:
                        problems += 1
                        print(f"  {group!r}: lookup failed: {exc}", file=out)
                        continue
                    if remote is not None:
                        print(f"  {group!r}: bound to {remote.name!r} (id {remote.id})", file=out)
                    elif target.group_id:
                        problems += 1
                        print(f"  {group!r}: no group with id {target.group_id!r}", file=out)
                    elif connector.capabilities.can_create_group and (
                        not isinstance(connector, GroupCreationProbe) or await connector.can_create_groups()
                    ):
                        print(f"  {group!r}: does not exist yet; the first run creates it", file=out)
                    else:
                        problems += 1
                        print(
                            f"  {group!r}: does not exist and {settings.name} cannot create groups: "
                            "create it there first",
                            file=out,
                        )
            finally:
                await connector.aclose()
        for source in build_sources(config):
            try:
                lines = await source.check()
            except Exception as exc:  # a source that cannot even try (as above): one line, like any other problem
                lines = [CheckLine(False, f"cannot be checked: {type(exc).__name__}: {exc}")]
            for line in lines:
                print(f"source {source.name}: {line.text}", file=out)
                problems += not line.ok
    finally:
        store.close()
    return problems
