"""From a file to a checked `Config`: YAML with the line of every key, ``${VAR}`` expansion, ``SYNCD_…`` overrides.

Why this module exists: a problem in the config must be reported at its line, and PyYAML's plain loading
forgets lines (and silently keeps the last of two duplicate keys, and turns ``postcode: 01234`` into a number).
So:

* PyYAML's ``compose()`` gives a node tree with marks. `_Walker` walks it into plain Python values itself,
  recording the line of every key path, refusing duplicate and non-string keys, and expanding ``${VAR}`` /
  ``${VAR:-default}`` (``$${`` is a literal ``${``) so a missing variable is reported where it is used. The
  walk follows the models' types: a scalar going into a text field keeps its source text, so ``postcode:
  01234``, ``first_name: No`` or ``group_id: 0012`` are not turned into numbers or booleans by YAML 1.1's
  implicit typing. It also collects every secret the file brings, so no message ever echoes one.
* The values then go through the models (`syncd.config.models`), with the ``SYNCD_<KEY>__<SUBKEY>`` variables
  of the given environment overriding them; every failure becomes ``file:line: key: message`` lines
  (`syncd.config.problems`), never a traceback.

The model a file is validated as is `Config` with the registered source types (`config_model`): the source
registry is looked up there, when a file is loaded, and not when this package is imported, because the
sources import `syncd.config` (their settings build on its models). The dependency goes from `syncd.sources`
to `syncd.config`; that lookup is its only way back.
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings
from pydantic_settings.exceptions import SettingsError

from syncd.config.models import Config, StateOnly, StateSettings, environment, with_sources
from syncd.config.paths import Loc, Origins, child_type, dotted, wants_text
from syncd.config.problems import (
    Problem,
    hide,
    is_secret_key,
    one_line,
    raise_problems,
    secrets_in,
    translate,
    unknown_key,
    yaml_problem,
)
from syncd.errors import ConfigError

# libyaml's loader when PyYAML was built with it: same nodes and marks, an order of magnitude faster on
# groups of tens of thousands of inline members.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
EXTENSION_PREFIX = "x-"  # top-level keys ignored, to hold YAML anchors (as in docker compose files)
_NOT_A_MAPPING = "the top level must be a mapping of keys (state, providers, groups, …)"

_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_VAR = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# ------------------------------------------------------------------------------------------- loading


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and check the config file at `path`; `env` (default `os.environ`) feeds ``${VAR}`` and overrides.

    Raises `ConfigError` (`ConfigErrors` when there are several problems) naming file, line and key.
    Nothing is contacted.
    """
    path = Path(path)
    environ: Mapping[str, str] = os.environ if env is None else env
    model = config_model()
    file, root = read_yaml(path)
    data, walker = _walk_document(file, root, model, environ)
    unknown = _top_level_keys(data, model, walker.lines)
    config = _validate(model, data, walker, environ, file, unknown)
    if unknown:
        raise_problems(file, unknown)
    config._path = path
    return config


def load_state_settings(path: str | Path, env: Mapping[str, str] | None = None) -> StateSettings:
    """The config file's `state` section, for the commands that only read the state DB (`history`, …).

    Only that section is expanded and checked, so such a command works without the providers' credentials in
    the environment and whatever the rest of the file holds (as long as it is YAML). ``${VAR}`` expansion,
    ``SYNCD_STATE__URL`` (or ``SYNCD_STATE``) overrides and the file:line:key errors are those of `load_config`.
    """
    path = Path(path)
    environ: Mapping[str, str] = os.environ if env is None else env
    file, root = read_yaml(path)
    if root is not None and not isinstance(root, yaml.MappingNode):
        raise ConfigError(_NOT_A_MAPPING, file=file, line=1)
    walker = _Walker(environ)
    data = {} if root is None else _state_section(file, root, walker)
    return _validate(StateOnly, data, walker, environ, file, []).state


def config_model() -> type[Config]:
    """`Config` with `sources` entries of every type in `syncd.sources.registry.SOURCES` (see the module
    docstring for why the registry is imported here)."""
    from syncd.sources.registry import SOURCES

    return with_sources({name: spec.settings for name, spec in SOURCES.items()})


def read_yaml(path: Path, loader: Any = _LOADER) -> tuple[str, yaml.Node | None]:
    """The file's name as messages give it, and its YAML node tree (None for an empty file). `loader`: one of
    PyYAML's safe loaders (libyaml's by default, where PyYAML has it)."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", file=file) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", file=file) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", file=file) from None
    try:
        root: yaml.Node | None = yaml.compose(text, Loader=loader)
    except yaml.MarkedYAMLError as exc:
        line, message = yaml_problem(exc, text, loader)
        raise ConfigError(f"invalid YAML: {message}", file=file, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {one_line(str(exc))}", file=file) from None
    return file, root


def _walk_document(
    file: str, root: yaml.Node | None, model: type[Config], environ: Mapping[str, str]
) -> tuple[dict[str, Any], _Walker]:
    """The document's values (a mapping), and the walker that knows their lines and secrets."""
    walker = _Walker(environ)
    data: Any = {} if root is None else walker.walk(root, (), model)
    if walker.problems:
        raise_problems(file, walker.problems)
    if not isinstance(data, dict):
        raise ConfigError(_NOT_A_MAPPING, file=file, line=1)
    return data, walker


def _top_level_keys(data: dict[str, Any], model: type[Config], lines: Mapping[Loc, int]) -> list[Problem]:
    """Drop the extension keys (x-…: a place for YAML anchors) and the unknown ones, and return a problem for
    each unknown one. They never reach the model: pydantic-settings would take some as its own init arguments
    (_env_file, …)."""
    for key in [k for k in data if k.startswith(EXTENSION_PREFIX)]:
        del data[key]
    unknown: list[Problem] = []
    for key in [k for k in data if k not in model.model_fields]:
        unknown.append(Problem(lines.get((key,)), key, unknown_key(key, list(model.model_fields))))
        del data[key]
    return unknown


def _state_section(file: str, root: yaml.MappingNode, walker: _Walker) -> dict[str, Any]:
    """The top-level `state` key, and merge keys (<<) that could bring one in; nothing else is walked."""
    kept = [(k, v) for k, v in root.value if k.tag == _MERGE_TAG or (_is_str_key(k) and k.value == "state")]
    pruned = yaml.MappingNode(root.tag, kept, root.start_mark, root.end_mark, root.flow_style)
    walked = walker.walk(pruned, (), StateOnly)
    problems = [p for p in walker.problems if p.key is not None and re.match(r"state\b", p.key)]
    if problems:
        raise_problems(file, problems)
    return {"state": walked["state"]} if isinstance(walked, dict) and "state" in walked else {}


def _is_str_key(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _STR_TAG


_SettingsT = typing.TypeVar("_SettingsT", bound=BaseSettings)


def _validate(
    cls: type[_SettingsT],
    data: dict[str, Any],
    walker: _Walker,
    environ: Mapping[str, str],
    file: str,
    soft: Sequence[Problem],
) -> _SettingsT:
    """`cls(**data)` with the environment's overrides; every failure a `ConfigError` (never a traceback).
    `soft`: problems already found, reported along with the model's own."""
    origins = Origins(walker.lines, environ)
    try:
        with environment(environ):
            return cls(**data)
    except ValidationError as exc:
        raise_problems(file, [*soft, *translate(exc, cls, data, origins, walker.secrets, file)])
    except SettingsError as exc:
        field = re.search(r'field "([^"]+)"', str(exc))
        name = origins.env_var((field.group(1),)) if field else None
        raise ConfigError(
            "not valid JSON (a list or mapping given in one environment variable is written as JSON)",
            file=f"environment variable {name}" if name else "environment",
            key=field.group(1) if field else None,
        ) from None
    except Exception as exc:  # a validator that raised something other than ValueError: still no traceback
        message = hide(one_line(f"{type(exc).__name__}: {exc}"), walker.secrets)
        raise ConfigError(f"invalid value ({message})", file=file) from None


# ------------------------------------------------------------------------------------------- the walk


class _Walker:
    """Turns a composed YAML node tree into plain values, recording the line of every key path and every
    secret it meets (the value of a secret key, a URL's password, a secret variable's value)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.lines: dict[Loc, int] = {(): 1}
        self.problems: list[Problem] = []
        self.secrets: set[str] = set()
        self._constructor = yaml.constructor.SafeConstructor()
        self._active: set[int] = set()

    def problem(self, node: yaml.Node, loc: Loc, message: str) -> None:
        self.problems.append(Problem(node.start_mark.line + 1, dotted(loc) or None, message))

    def walk(self, node: yaml.Node, loc: Loc, tp: Any) -> Any:
        if id(node) in self._active:
            self.problem(node, loc, "an alias refers to a node that contains it")
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, loc, tp)
            if isinstance(node, yaml.SequenceNode):
                return [self._item(child, (*loc, i), child_type(tp, i)) for i, child in enumerate(node.value)]
            return self._scalar(node, loc, tp)
        finally:
            self._active.discard(id(node))

    def _item(self, node: yaml.Node, loc: Loc, tp: Any) -> Any:
        self.lines[loc] = node.start_mark.line + 1
        return self.walk(node, loc, tp)

    def _mapping(self, node: yaml.MappingNode, loc: Loc, tp: Any) -> dict[str, Any]:
        tag = self._type_tag(node)
        explicit: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                for key, value in self._merged(value_node, loc, tp).items():
                    merged.setdefault(key, value)
                continue
            named = self._key(key_node, loc, first_line)
            if named is None:
                continue
            key = named
            child = (*loc, key)
            if key in merged:  # a key given here overrides one merged in with <<: forget the merged lines
                for stale in [p for p in self.lines if p[: len(child)] == child]:
                    del self.lines[stale]
            self.lines[child] = first_line[key]
            value = self.walk(value_node, child, child_type(tp, key, tag))
            if isinstance(value, str) and value:
                self.secrets |= secrets_in(key, value)
            explicit[key] = value
        return {**merged, **explicit}

    def _merged(self, value_node: yaml.Node, loc: Loc, tp: Any) -> dict[str, Any]:
        """What a merge key (<<) brings: its mapping, or its mappings (the first to give a key wins)."""
        merged: dict[str, Any] = {}
        sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                self.problem(source, loc, "a merge key (<<) takes a mapping or a list of mappings")
                continue
            for key, value in self._mapping(source, loc, tp).items():
                merged.setdefault(key, value)
        return merged

    def _key(self, key_node: yaml.Node, loc: Loc, first_line: dict[str, int]) -> str | None:
        """The key, recorded in `first_line`; None (and a problem) for a key that is not a string or a
        duplicate."""
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR_TAG:
            shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "a collection"
            self.problem(key_node, loc, f"key {shown!r} is not a string (quote it)")
            return None
        key = typing.cast(str, key_node.value)
        if key in first_line:
            self.problem(key_node, (*loc, key), f"duplicate key (first given on line {first_line[key]})")
            return None
        first_line[key] = key_node.start_mark.line + 1
        return key

    def _type_tag(self, node: yaml.MappingNode, depth: int = 0) -> object:
        """The `type` of this mapping, its own or merged in with << (it picks the provider or source model)."""
        tag: object = None
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG and tag is None and depth < 10:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    if tag is None and isinstance(source, yaml.MappingNode):
                        tag = self._type_tag(source, depth + 1)
            elif isinstance(key_node, yaml.ScalarNode) and key_node.value == "type":
                return value_node.value if isinstance(value_node, yaml.ScalarNode) else None
        return tag

    def _scalar(self, node: yaml.Node, loc: Loc, tp: Any) -> Any:
        if not isinstance(node, yaml.ScalarNode):  # pragma: no cover - compose yields only these three
            self.problem(node, loc, "unsupported YAML node")
            return None
        if node.tag == _NULL_TAG:
            return None
        if node.tag == _STR_TAG or (wants_text(tp) and node.tag.startswith("tag:yaml.org,2002:")):
            return self._interpolate(typing.cast(str, node.value), node, loc)
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.problem(node, loc, one_line(getattr(exc, "problem", None) or str(exc)))
            return None

    def _interpolate(self, text: str, node: yaml.Node, loc: Loc) -> str | None:
        """`text` with its ``${VAR}`` expanded; None (and a problem for each) when a variable is missing."""
        if "$" not in text:
            return text
        failed = False

        def substitute(match: re.Match[str]) -> str:
            nonlocal failed
            value, problem = self._variable(match)
            if problem is not None:
                self.problem(node, loc, problem)
                failed = True
            return value

        result = _VAR.sub(substitute, text)
        return None if failed else result

    def _variable(self, match: re.Match[str]) -> tuple[str, str | None]:
        """What one ``${…}`` (or ``$${``) stands for, and the problem with it if any."""
        if match.group(0) == "$${":
            return "${", None
        body = match.group(1)
        if body is None:
            return "", "unclosed ${ (write $${ for a literal ${)"
        name, has_default, default = body.partition(":-")
        if not _VAR_NAME.fullmatch(name):
            return "", f"bad variable reference ${{{body}}} (expected ${{NAME}} or ${{NAME:-default}})"
        value = self.env.get(name)
        if value and is_secret_key(name):
            self.secrets.add(value)  # e.g. ${DB_PASSWORD} inside a URL: never echoed either
        if has_default and not value:
            return default, None
        if not value:
            # An empty value is almost always a variable passed through unset (docker -e NAME);
            # ${NAME:-} says explicitly that empty is fine.
            return "", f"environment variable {name} is {'empty' if value == '' else 'not set'}"
        return value, None
