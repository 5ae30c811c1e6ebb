"""`syncd validate --online`: do the credentials work, and does every target group exist (or can it be made)?

It only reads: no group is created, no member touched, and nothing is written to the state DB (it is opened
read-only if it exists, and neither created nor upgraded). Each pair says what the first run would do:
``bound to`` a group the state DB has a binding for, ``would adopt`` an existing provider group that is not
bound yet, ``would create`` one that does not exist yet.
"""

from __future__ import annotations

from typing import TextIO

from connectors.base import Connector, ConnectorError, GroupCreationProbe, RemoteGroup
from connectors.registry import build_connector
from connectors.settings import BuildContext
from syncd.config import Config, TargetSpec
from syncd.errors import StateError
from syncd.sources import CheckLine, build_sources
from syncd.state import Binding, Store


async def _check_queue(config: Config, out: TextIO) -> int:
    """On PostgreSQL, the replicas' queue (Procrastinate) must be there: 1 problem when it is not."""
    if not config.state.url.startswith("postgresql"):
        return 0
    from syncd.scheduling.queue import check_schema  # the `postgres` extra

    why = await check_schema(config.state.url)
    print(f"queue (replicas of syncd serve): {why or 'ok'}", file=out)
    return 1 if why else 0


async def check_online(config: Config, out: TextIO) -> int:
    """Print one line per provider and per (group, provider) pair; return how many problems were found."""
    problems = 0
    store: Store | None = None
    try:
        store = Store.open_read_only(config.state.url)
    except StateError as exc:
        problems += 1
        print(f"{exc} (groups are checked as if none were bound)", file=out)
    else:
        if store is None:
            print(f"state DB {config.state.safe_url}: not created yet (the first run creates it)", file=out)
        else:
            print(f"state DB {store.url}: ok", file=out)
            problems += await _check_queue(config, out)
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
                    try:
                        binding = store.binding(group, settings.name) if store is not None else None
                        ok, text = await _check_pair(connector, group, target, binding)
                    except ConnectorError as exc:
                        ok, text = False, f"lookup failed: {exc}"
                    except StateError as exc:
                        ok, text = False, str(exc)
                    problems += not ok
                    print(f"  {group!r}: {text}", file=out)
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
        if store is not None:
            store.close()
    return problems


async def _check_pair(
    connector: Connector, group: str, target: TargetSpec, binding: Binding | None
) -> tuple[bool, str]:
    """(fine?, what the first run would do with this pair), found as the reconciler binds: a target's group_id
    first, then a stored binding, then the group's name."""
    provider = target.provider
    if target.group_id:
        remote = await connector.find_group(group_id=target.group_id)
        if remote is None:
            return False, f"no group with id {target.group_id!r}"
        if binding is not None and binding.remote_id == remote.id:
            return True, _bound(remote)
        return True, f"would adopt the existing group {remote.name!r} (id {remote.id}, the target's group_id)"
    gone = ""
    if binding is not None:
        remote = await connector.find_group(group_id=binding.remote_id)
        if remote is not None:
            return True, _bound(remote)
        gone = f"the group it was bound to (id {binding.remote_id}) is gone; "
    remote = await connector.find_group(name=group)
    if remote is not None:
        return True, f"{gone}would adopt the existing group {remote.name!r} (id {remote.id})"
    if connector.capabilities.can_create_group and (
        not isinstance(connector, GroupCreationProbe) or await connector.can_create_groups()
    ):
        return True, f"{gone}would create it ({provider} has no group of that name yet)"
    return False, f"{gone}does not exist and {provider} cannot create groups: create it there first"


def _bound(remote: RemoteGroup) -> str:
    return f"bound to {remote.name!r} (id {remote.id})"
