"""syncd's own errors, classified by what the caller does next.

::

    SyncdError                     stop this command or this pair; the message is for the user
    ├── ConfigError                the config is wrong: fix the file (names file, line and key); nothing was contacted
    ├── SourceError                a source could not be read: its groups are left untouched this pass
    ├── StateError                 the state DB is unreachable or its schema cannot be upgraded
    └── StalePlanError             `syncd apply` refused a plan the world has moved away from

    connectors.base.ConnectorError (the provider side, see that module)
    ├── RetriableError             retried inside connectors.http with backoff; surfaces only once exhausted
    └── FatalError                 fails the op (or the pair, for auth/binding errors); other pairs go on
"""

from __future__ import annotations


class SyncdError(Exception):
    """Base of syncd's own errors. `str()` is a one-line message fit for a terminal; never a secret."""


class ConfigError(SyncdError):
    def __init__(
        self, message: str, *, file: str | None = None, line: int | None = None, key: str | None = None
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.key = key
        where = ":".join(str(p) for p in (file, line) if p is not None)
        prefix = " ".join(p for p in (where + ":" if where else "", f"{key}:" if key else "") if p)
        super().__init__(f"{prefix} {message}" if prefix else message)


class SourceError(SyncdError):
    def __init__(self, source: str, message: str) -> None:
        self.source = source
        self.message = message
        super().__init__(f"source {source}: {message}")


class StateError(SyncdError):
    pass


class StalePlanError(SyncdError):
    pass
