"""Where desired groups come from. Every source yields `DesiredGroup`s; the reconciler does not care which.

A source that fails raises `SourceError`, and the reconciler then leaves every group of that source
untouched for the pass (fail closed: an empty or broken read must never look like "remove everyone").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from syncd.model import DesiredGroup


class Source(Protocol):
    name: str  # shown in reports and logs: "yaml:syncd.yaml", "hubspot", "sql:…"

    async def read(self) -> Sequence[DesiredGroup]: ...
