"""Every way a config can be wrong, said the one way: ``file:line: key: message``, never echoing a secret.

Why this module exists: the config is the one thing users edit by hand, and a mistake in it must never reach
a provider, so `load_config` reports every problem before anything is contacted, one line each. This is the
one mapping from what goes wrong (a YAML syntax error, a pydantic validation error, a cross-check of the
models) to those lines:

* `yaml_problem` finds the line of a YAML error's *cause* (the unclosed bracket, not the end of the file) and
  words it the same whether PyYAML runs on libyaml or not.
* `translate` turns pydantic's errors into `Problem`s: the location without pydantic's union tags, the line
  (or the ``SYNCD_…`` variable) it came from, a message in the file's terms (``unknown key (did you mean
  'list_id'?)``), and the offending value echoed (``got 'fast'``) unless it may be a secret.
* Validators that check several fields at once raise `LocatedErrors`, whose problems carry their own
  locations (and may name a second place: "already used by groups[0] (syncd.yaml:12)").
* `raise_problems` raises them as one `ConfigError` or a `ConfigErrors` of several, in file order.

Nothing here knows a provider or a source: the types at a location are read from the root model being
loaded (`syncd.config.paths`).
"""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import SecretStr, ValidationError

from syncd.config.paths import (
    ENV_PREFIX,
    Loc,
    Origins,
    dotted,
    known_keys,
    strip_tags,
    type_at,
    union_tags,
    unwrap,
    value_at,
)
from syncd.errors import ConfigError

# A key whose name contains one of these holds a secret: its value never appears in a message.
SECRET_KEY_PARTS = ("token", "secret", "password", "passwd", "api_key", "apikey", "credential", "private_key")
URL_PASSWORD = re.compile(r"://[^/@:\s]*:([^/@\s]+)@")
_MIN_SECRET = 4  # shorter values are not masked in messages (they would mask ordinary words)


def is_secret_key(name: str) -> bool:
    name = name.lower()
    return any(part in name for part in SECRET_KEY_PARTS)


def secrets_in(key: str, value: str) -> set[str]:
    """The secrets a value brings: all of it under a secret key, and any password in a URL inside it."""
    found = {value} if value and is_secret_key(key) else set()
    return found | {p for p in URL_PASSWORD.findall(value) if p}


def hide(message: str, secrets: Collection[str]) -> str:
    for secret in secrets:
        if len(secret) >= _MIN_SECRET:
            message = message.replace(secret, "***")
    return message


def one_line(text: str) -> str:
    return " ".join(str(text).split())


class Problem(typing.NamedTuple):
    line: int | None
    key: str | None
    message: str
    env_var: str | None = None


class ConfigErrors(ConfigError):
    """Several problems at once. Its file/line/key/message are the first's; ``str()`` has one line each."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        first = errors[0]
        super().__init__(first.message, file=first.file, line=first.line, key=first.key)
        self.errors = tuple(errors)
        self.args = ("\n".join(str(e) for e in self.errors),)

    def __str__(self) -> str:
        return str(self.args[0])


def raise_problems(file: str, problems: Sequence[Problem]) -> typing.NoReturn:
    """Raise the problems, each once, file lines first in line order, then the environment's."""
    unique = list({(p.line, p.env_var, p.message): p for p in reversed(problems)}.values())[::-1]
    ordered = sorted(unique, key=lambda p: (p.env_var is not None, p.line or 0))
    errors = [
        ConfigError(p.message, file=f"environment variable {p.env_var}" if p.env_var else file, line=p.line, key=p.key)
        for p in ordered
    ]
    if len(errors) == 1:
        raise errors[0]
    raise ConfigErrors(errors)


# ------------------------------------------------------------------------------ problems of several fields


class LocatedErrors(ValueError):
    """Raised by cross-field validators: problems with locations relative to the validated model.

    A message may contain ``{ref}``: it is replaced by ``refs[i]`` (a location relative to the same model)
    and, when the file says where that is, its file:line, so an error can name both places involved.
    """

    def __init__(self, problems: Sequence[tuple[Loc, str]], refs: Mapping[int, Loc] | None = None) -> None:
        self.problems = list(problems)
        self.refs = dict(refs or {})
        super().__init__(
            "; ".join(
                f"{dotted(loc)}: {msg.replace('{ref}', dotted(self.refs.get(i, ())))}"
                for i, (loc, msg) in enumerate(self.problems)
            )
        )


class ProblemList:
    """Collects a validator's problems; `check()` raises them as one `LocatedErrors`, if there are any."""

    def __init__(self) -> None:
        self.problems: list[tuple[Loc, str]] = []
        self.refs: dict[int, Loc] = {}

    def add(self, loc: Loc, message: str, *, ref: Loc | None = None) -> None:
        """`ref`: the other place `message` names as ``{ref}``."""
        if ref is not None:
            self.refs[len(self.problems)] = ref
        self.problems.append((loc, message))

    def check(self) -> None:
        if self.problems:
            raise LocatedErrors(self.problems, self.refs)


# ------------------------------------------------------------------------------------ YAML syntax errors

_FLOW_CONTEXTS = {"while parsing a flow sequence": ("[", "]"), "while parsing a flow mapping": ("{", "}")}


@dataclass(frozen=True)
class _YamlFailure:
    """A YAML syntax error where the parser gave up (`at`) and, maybe, where the construct began (`start`)."""

    context: str
    problem: str
    start: yaml.Mark | None
    at: yaml.Mark
    text: str
    lines: list[str]
    loader: Any

    @property
    def parsed(self) -> str:
        return one_line(", ".join(p for p in (self.context, self.problem) if p))

    @property
    def spans_lines(self) -> bool:
        """Whether the parser gave up on a later line than the construct began: the cause is the beginning."""
        return self.start is not None and self.at.line > self.start.line

    def char_at(self, line: int, column: int) -> str:
        lines = self.lines
        return lines[line][column] if line < len(lines) and column < len(lines[line]) else ""

    def until(self, line: int) -> str:
        rest = self.lines[line:]
        if all(not s.strip() or s.lstrip().startswith("#") for s in rest):
            return "before the end of the file"
        return f"before line {line + 1}"


_Said = tuple[int | None, str]


def _flow_never_closed(f: _YamlFailure) -> _Said | None:
    if not (f.spans_lines and f.context in _FLOW_CONTEXTS):
        return None
    assert f.start is not None
    opening, closing = _FLOW_CONTEXTS[f.context]
    return (
        f.start.line + 1,
        f"the {opening!r} in column {f.start.column + 1} is not closed "
        f"(expected ',' or {closing!r} {f.until(f.at.line)})",
    )


def _flow_node_never_closed(f: _YamlFailure) -> _Said | None:
    if f.context != "while parsing a flow node":  # e.g. `[a, b,` and then the end: the mark is not the bracket's
        return None
    unclosed = _unclosed_flow(f.text, f.at, f.loader)
    if unclosed is None or unclosed[0].line >= f.at.line:
        return None
    mark, opening = unclosed
    closing = "]" if opening == "[" else "}"
    return (
        mark.line + 1,
        f"the {opening!r} in column {mark.column + 1} is not closed (no {closing!r} {f.until(f.at.line)})",
    )


def _quote_never_closed(f: _YamlFailure) -> _Said | None:
    if not (f.spans_lines and f.context == "while scanning a quoted scalar"):
        return None
    assert f.start is not None
    quote = f.char_at(f.start.line, f.start.column)
    shown = f" ({quote})" if quote in ("'", '"') else ""
    return (
        f.start.line + 1,
        f"the quoted string{shown} that starts in column {f.start.column + 1} is not closed {f.until(f.at.line)}",
    )


def _tab(f: _YamlFailure) -> _Said | None:
    if f.char_at(f.at.line, f.at.column) != "\t":
        return None
    return f.at.line + 1, "a tab character: YAML is indented with spaces, not tabs"


def _indentation(f: _YamlFailure) -> _Said | None:
    if not (f.context.startswith("while parsing a block") and f.spans_lines):
        return None
    assert f.start is not None
    return (
        f.at.line + 1,
        f"this line's indentation does not fit the block that starts on line {f.start.line + 1} ({f.parsed})",
    )


def _colon_in_value(f: _YamlFailure) -> _Said | None:
    if not f.problem.startswith("mapping values are not allowed"):
        return None
    return f.at.line + 1, f"{f.parsed} (quote a value that contains ': ', or indent this line less)"


# Tried in this order; the first that recognises the failure says it.
_YAML_RULES: tuple[Callable[[_YamlFailure], _Said | None], ...] = (
    _flow_never_closed,
    _flow_node_never_closed,
    _quote_never_closed,
    _tab,
    _indentation,
    _colon_in_value,
)


def yaml_problem(exc: yaml.MarkedYAMLError, text: str, loader: Any) -> tuple[int | None, str]:
    """The line of a YAML syntax error's cause, and what to say about it.

    The parser reports where it gave up (``problem_mark``). For a bracket or quote that is never closed that
    is a later line, or the end of the file; the cause is where the construct started (``context_mark``).
    Messages do not depend on whether PyYAML runs on libyaml (whose wording differs) where it matters.
    `loader` is the loader that failed (its scanner finds unclosed brackets).
    """
    context, problem = exc.context or "", exc.problem or ""
    start, at = exc.context_mark, exc.problem_mark
    if at is None:
        parsed = one_line(", ".join(p for p in (context, problem) if p))
        return (start.line + 1 if start is not None else None), parsed
    failure = _YamlFailure(context, problem, start, at, text, text.splitlines(), loader)
    for rule in _YAML_RULES:
        said = rule(failure)
        if said is not None:
            return said
    return at.line + 1, failure.parsed


def _unclosed_flow(text: str, at: yaml.Mark, loader: Any) -> tuple[yaml.Mark, str] | None:
    """Where the innermost ``[`` or ``{`` still open at `at` starts, and which it is, from PyYAML's own tokens
    (so brackets in quoted strings, comments and plain scalars do not count); None if there is none."""
    opened: list[tuple[yaml.Mark, str]] = []
    try:
        for token in yaml.scan(text, Loader=loader):
            if (token.start_mark.line, token.start_mark.column) >= (at.line, at.column):
                break
            if isinstance(token, yaml.FlowSequenceStartToken | yaml.FlowMappingStartToken):
                opened.append((token.start_mark, "[" if isinstance(token, yaml.FlowSequenceStartToken) else "{"))
            elif isinstance(token, yaml.FlowSequenceEndToken | yaml.FlowMappingEndToken) and opened:
                opened.pop()
    except yaml.YAMLError:
        pass
    return opened[-1] if opened else None


# ------------------------------------------------------------------------------------ validation errors


@dataclass(frozen=True)
class _Context:
    """What explaining one validation error needs besides the error."""

    root: Any  # the model validated (its types say what a location holds)
    data: Any  # what it was given
    origins: Origins
    secrets: frozenset[str]
    file: str


def translate(
    exc: ValidationError, root: Any, data: Any, origins: Origins, secrets: Collection[str], file: str
) -> list[Problem]:
    """pydantic's errors for `data` validated as `root`, one `Problem` each (a `LocatedErrors` gives several).
    `secrets` are the values the file brought that must never be echoed (the environment's are added)."""
    ctx = _Context(root, data, origins, frozenset(secrets) | _env_secrets(origins.environ), file)
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = strip_tags(root, err["loc"])
        for where, message in _explain(err, loc, ctx):
            problems.append(_locate(where, _without_secrets(message, where, err, ctx), ctx))
    return problems


def _env_secrets(environ: Mapping[str, str]) -> frozenset[str]:
    """Secrets the SYNCD_… overrides bring (a secret key's value, a URL's password)."""
    found: set[str] = set()
    for name, value in environ.items():
        if name.upper().startswith(ENV_PREFIX) and value:
            found |= secrets_in(name, value)
    return frozenset(found)


def _explain(err: Any, loc: Loc, ctx: _Context) -> list[tuple[Loc, str]]:
    """The problems one pydantic error stands for, with their locations, in the file's terms."""
    located = (err.get("ctx") or {}).get("error")
    if isinstance(located, LocatedErrors):
        return _located(located, loc, ctx)
    explain = _BY_KIND.get(err["type"], _bad_value)
    return explain(err, loc, ctx)


def _located(located: LocatedErrors, loc: Loc, ctx: _Context) -> list[tuple[Loc, str]]:
    entries = []
    for i, (sub, msg) in enumerate(located.problems):
        ref = located.refs.get(i)
        if ref is not None:
            where_ref = (*loc, *ref)
            ref_line = ctx.origins.line(where_ref)
            named = where_ref[:-1] if where_ref[-1:] == ("name",) else where_ref  # groups[0], not .name
            msg = msg.replace("{ref}", dotted(named) + (f" ({ctx.file}:{ref_line})" if ref_line and ctx.file else ""))
        entries.append(((*loc, *sub), msg))
    return entries


def _unknown(err: Any, loc: Loc, ctx: _Context) -> list[tuple[Loc, str]]:
    parent = loc[:-1]
    container = value_at(ctx.data, parent)
    tag = container.get("type") if isinstance(container, dict) else None
    return [(loc, unknown_key(str(loc[-1]), known_keys(type_at(ctx.root, ctx.data, parent), tag)))]


def _missing(err: Any, loc: Loc, ctx: _Context) -> list[tuple[Loc, str]]:
    return [(loc, "missing required key")]


def _union_kind(loc: Loc, ctx: _Context) -> tuple[str, str]:
    """('provider', its types) for a location in `providers`, ('source', its types) in `sources`: the entry's
    kind is the list's key, singular, and the types are those of the union the list holds."""
    kind = str(loc[0]).removesuffix("s") if loc else "entry"
    return kind, ", ".join(sorted(union_tags(type_at(ctx.root, ctx.data, loc))))


def _bad_tag(err: Any, loc: Loc, ctx: _Context) -> list[tuple[Loc, str]]:
    what, known = _union_kind(loc, ctx)
    tag = (err.get("ctx") or {}).get("tag")
    return [((*loc, "type"), f"unknown {what} type {tag!r} (expected one of: {known})")]


def _no_tag(err: Any, loc: Loc, ctx: _Context) -> list[tuple[Loc, str]]:
    what, known = _union_kind(loc, ctx)
    return [((*loc, "type"), f"missing required key (the {what} type, one of: {known})")]


_UNPARSABLE = re.compile(r", unable to (parse string as an? \w+|interpret input)$")
_SAYS_GOT = re.compile(r"\bgot\b")
_SHOWN_CHARS = 60


def _bad_value(err: Any, loc: Loc, ctx: _Context) -> list[tuple[Loc, str]]:
    """A value of the wrong type or form: pydantic's message, with the value echoed unless it may be secret."""
    message = _message(err, loc)
    value = err.get("input")
    got = _got(value, loc, ctx, type_error=err["type"].endswith("_type"))
    if got and not _SAYS_GOT.search(message) and not (isinstance(value, str) and value and value in message):
        message = f"{_UNPARSABLE.sub('', message)}, got {got}"
    return [(loc, message)]


_BY_KIND: dict[str, Callable[[Any, Loc, _Context], list[tuple[Loc, str]]]] = {
    "extra_forbidden": _unknown,
    "missing": _missing,
    "union_tag_invalid": _bad_tag,
    "union_tag_not_found": _no_tag,
}


def _without_secrets(message: str, where: Loc, err: Any, ctx: _Context) -> str:
    key = str(where[-1]) if where else ""
    value = err.get("input")
    if is_secret_key(key) and isinstance(value, str) and value:
        message = message.replace(value, "***")
    return hide(message, ctx.secrets)


def _locate(where: Loc, message: str, ctx: _Context) -> Problem:
    return Problem(ctx.origins.line(where), dotted(where) or None, one_line(message), ctx.origins.env_var(where))


def unknown_key(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else ("expected one of: " + ", ".join(known) if known else "")
    return f"unknown key ({hint})" if hint else "unknown key"


def _may_be_secret(value: str | int | float, loc: Loc, ctx: _Context) -> bool:
    """Under a secret key (by name, or a SecretStr field), or containing a known secret."""
    text = value if isinstance(value, str) else ""
    return (
        any(is_secret_key(segment) for segment in loc if isinstance(segment, str))
        or unwrap(type_at(ctx.root, ctx.data, loc)) is SecretStr
        or any(len(secret) >= _MIN_SECRET and secret in text for secret in ctx.secrets)
    )


def _got(value: object, loc: Loc, ctx: _Context, *, type_error: bool) -> str | None:
    """What a message about a value of the wrong type or form says it got (``'fast'``), or None.

    A secret is never shown: for a secret key (by name, or a SecretStr field) or a value that contains a known
    secret, only its type; nor a URL (its query may hold a password, whatever the key is called). Lists and
    mappings are named by kind, and only in a type error."""
    if value is None:
        return "an empty value"
    if isinstance(value, Mapping | list | tuple):
        return ("a mapping" if isinstance(value, Mapping) else "a list") if type_error else None
    if not isinstance(value, str | int | float) or (isinstance(value, str) and "://" in value):
        return None
    if _may_be_secret(value, loc, ctx):
        return f"a value of type {type(value).__name__}"
    if isinstance(value, bool):
        return str(value).lower()
    if not isinstance(value, str):
        return str(value)
    return repr(value if len(value) <= _SHOWN_CHARS else value[: _SHOWN_CHARS - 1] + "…")


_READABLE = {
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "dict_type": "expected a mapping",
    "list_type": "expected a list",
    "string_type": "expected a string",
}
# The `name` of an entry of these lists, when it does not match its pattern.
_NAME_RULES = {
    "providers": "must start with a letter or digit and contain only letters, digits, '_', '.' and '-'",
    "sources": "must start with a letter or digit and contain only letters, digits, '_', '.', ':', '#' and '-'",
}


def _message(err: Any, loc: Loc) -> str:
    kind = err["type"]
    if kind in _READABLE:
        return _READABLE[kind]
    if kind == "string_pattern_mismatch" and len(loc) == 3 and loc[2] == "name" and loc[0] in _NAME_RULES:
        return _NAME_RULES[str(loc[0])]
    message = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    return message
