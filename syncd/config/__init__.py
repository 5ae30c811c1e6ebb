"""The config file: the one thing users edit by hand, checked whole before anything is contacted.

`load_config` reports each problem on one line naming the file, the line and the key (``syncd.yaml:14:
providers[0].token: environment variable COMMUNIC8_TOKEN is not set``), and never echoes a secret. The package
keeps one concern per module:

* `loading`: YAML with the line of every key, ``${VAR}`` expansion, ``SYNCD_…`` overrides; `load_config`.
* `problems`: every validation and YAML error turned into those ``file:line: key: message`` lines.
* `models`: the daemon's own models (state, schedule, server, safety, inline groups) and the `Config` root
  with its cross-checks.
* `paths`: what both of the first two need to know about a key path.

Providers contribute their settings through `connectors.registry`, sources through `syncd.sources.registry`
(looked up when a file is loaded): nothing here names either.
"""

from syncd.config.loading import config_model, load_config, load_state_settings
from syncd.config.models import (
    AddressSpec,
    Config,
    DeclaredGroup,
    GroupSpec,
    HasTargets,
    MemberSpec,
    ProviderEntry,
    SafetySettings,
    ScheduleSettings,
    ServerSettings,
    SourceSettings,
    StateSettings,
    TargetSpec,
    check_cron,
    format_duration,
    parse_duration,
)
from syncd.config.problems import ConfigErrors, LocatedErrors

__all__ = [
    "AddressSpec",
    "Config",
    "ConfigErrors",
    "DeclaredGroup",
    "GroupSpec",
    "HasTargets",
    "LocatedErrors",
    "MemberSpec",
    "ProviderEntry",
    "SafetySettings",
    "ScheduleSettings",
    "ServerSettings",
    "SourceSettings",
    "StateSettings",
    "TargetSpec",
    "check_cron",
    "config_model",
    "format_duration",
    "load_config",
    "load_state_settings",
    "parse_duration",
]
