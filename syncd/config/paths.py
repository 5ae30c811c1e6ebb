"""Key paths (``providers[0].token``): what the loader and the problem messages both need to know about one.

Why this module exists: walking the YAML (`loading`) and explaining a validation error (`problems`) both ask
the same questions of a location in the config, and neither owns the answers: what the path is called in a
message, which model type sits there (so a scalar going into a text field keeps its YAML text, and an unknown
key can be matched against the keys that exist), and where the value came from: a line of the file, or the
``SYNCD_<KEY>__<SUBKEY>`` environment variable that overrides it.

The types are read from whatever root model is being loaded (the `Config` assembled with the registered
sources, or the state section alone), never from a fixed list of providers or sources: a discriminated union
on ``type`` is resolved by the Literal its members declare.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, SecretStr

Loc = tuple[str | int, ...]

ENV_PREFIX = "SYNCD_"
ENV_DELIMITER = "__"


def dotted(loc: Sequence[str | int]) -> str:
    """``("providers", 0, "token")`` -> ``providers[0].token``."""
    out = ""
    for segment in loc:
        out += f"[{segment}]" if isinstance(segment, int) else (f".{segment}" if out else str(segment))
    return out


# ------------------------------------------------------------------------------------ types of key paths


def unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional: ``Annotated[X | None, …]`` -> ``X`` (a union of several stays)."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _tags(model: Any) -> tuple[object, ...]:
    """The values a model's `type` Literal allows (what picks it out of a discriminated union)."""
    field = model.model_fields.get("type") if _is_model(model) else None
    if field is None or typing.get_origin(field.annotation) is not Literal:
        return ()
    return typing.get_args(field.annotation)


def union_tags(tp: Any) -> list[str]:
    """The `type` tags of a union of models (the provider or source types), or [] for anything else."""
    tp = unwrap(tp)
    if typing.get_origin(tp) not in (Union, types.UnionType):
        return []
    return [str(tag) for arg in typing.get_args(tp) for tag in _tags(unwrap(arg))]


def model_for(tp: Any, tag: object) -> type[BaseModel] | None:
    """The model a mapping of type `tp` validates as; for a union of models, the one whose `type` is `tag`."""
    tp = unwrap(tp)
    if _is_model(tp):
        return typing.cast(type[BaseModel], tp)
    if typing.get_origin(tp) in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            arg = unwrap(arg)
            if tag in _tags(arg):
                return typing.cast(type[BaseModel], arg)
    return None


def child_type(tp: Any, segment: str | int, tag: object = None) -> Any:
    """The type of `segment` inside a value of type `tp`; None when unknown."""
    tp = unwrap(tp)
    if isinstance(segment, int):
        return typing.get_args(tp)[0] if typing.get_origin(tp) is list else None
    model = model_for(tp, tag)
    if model is None:
        return None
    field = model.model_fields.get(segment)
    return field.annotation if field is not None else None


def wants_text(tp: Any) -> bool:
    """Whether a YAML scalar going into `tp` keeps its source text (no implicit int/bool/date typing)."""
    tp = unwrap(tp)
    if tp is str or tp is SecretStr:
        return True
    if typing.get_origin(tp) is Literal:
        return all(isinstance(a, str) for a in typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return issubclass(tp, str)
    return _is_model(tp) and hasattr(tp, "__scalar_field__")


def known_keys(tp: Any, tag: object) -> list[str]:
    model = model_for(tp, tag)
    return list(model.model_fields) if model is not None else []


def value_at(data: Any, loc: Loc) -> Any:
    for segment in loc:
        if isinstance(segment, int) and isinstance(data, list) and 0 <= segment < len(data):
            data = data[segment]
        elif isinstance(segment, str) and isinstance(data, dict):
            data = data.get(segment)
        else:
            return None
    return data


def type_at(root: Any, data: Any, loc: Loc) -> Any:
    """The type of the value at `loc` in `data`, a mapping validated as `root` (None when unknown)."""
    tp: Any = root
    for i, segment in enumerate(loc):
        container = value_at(data, loc[:i])
        tag = container.get("type") if isinstance(container, dict) else None
        tp = child_type(tp, segment, tag)
        if tp is None:
            return None
    return tp


def strip_tags(root: Any, loc: Sequence[str | int]) -> Loc:
    """pydantic puts the discriminator's tag into locations inside a union (``providers.0.communic8.token``);
    a path names the key only (``providers[0].token``)."""
    out: list[str | int] = []
    tp: Any = root
    for segment in loc:
        tags = union_tags(tp)
        if isinstance(segment, str) and segment in tags:
            tp = model_for(tp, segment)
            continue
        out.append(segment)
        tp = child_type(tp, segment) if tp is not None else None
    return tuple(out)


# --------------------------------------------------------------------------------- where a value came from


@dataclass(frozen=True)
class Origins:
    """Where the value at each key path came from: the line of the file that gives it, unless a ``SYNCD_…``
    environment variable overrides it (then the variable, and no line)."""

    lines: Mapping[Loc, int]
    environ: Mapping[str, str]

    def env_var(self, loc: Loc) -> str | None:
        """The SYNCD_… variable whose value sits at (or above) `loc`, if the environment set it."""
        upper = {k.upper(): k for k in self.environ}
        for n in range(len(loc), 0, -1):
            name = ENV_PREFIX + ENV_DELIMITER.join(str(s) for s in loc[:n]).upper()
            if name in upper:
                return upper[name]
        return None

    def line(self, loc: Loc) -> int | None:
        """The line of `loc` (or of the nearest key above it that the file gives); None for an override."""
        if self.env_var(loc):
            return None
        for n in range(len(loc), -1, -1):
            if loc[:n] in self.lines:
                return self.lines[loc[:n]]
        return None
