"""Read ``mentorpulse.yaml``: ``${ENV}`` interpolation, strict validation, file:line errors.

PyYAML's plain ``safe_load`` forgets where each value came from, so we compose the node
tree and build the data ourselves, remembering the line of every key. A pydantic error's
``loc`` is then mapped back to the line the admin has to fix. Messages never carry the
values from the file: a value may be a secret, often one that came from the environment.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import types
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import structlog
import yaml
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import ErrorDetails
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mentorpulse.config.schema import (
    ConfigValueError,
    IcsSource,
    MentorpulseConfig,
    format_duration,
    sqlite_path,
    state_dir,
)
from mentorpulse.errors import ConfigError

__all__ = [
    "ConfigError",
    "check_source_paths",
    "config_path",
    "json_schema",
    "key_line",
    "load_config",
]

log = structlog.get_logger(__name__)

ENV_CONFIG = "MENTORPULSE_CONFIG"
DEFAULT_CONFIG = Path("config") / "mentorpulse.yaml"

KeyPath = tuple[str | int, ...]

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
# ``$${`` is a literal ``${``; ``${NAME}`` and ``${NAME:-default}`` are references.
_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_NAME_DEFAULT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$", re.DOTALL)
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
# Below this length an environment value is too short to be a secret, and replacing it
# everywhere in a message would mangle the message.
_MIN_REDACT = 3

# A real config is a few kB (pairs live in the roster CSV); 5 MB is far beyond any of them
# and still loads in about a second.
MAX_CONFIG_BYTES = 5 * 1024 * 1024
# Values that aliases (``*name``, ``<<: *name``) may add beyond the nodes the file itself
# holds: generous for shared rule blocks, far below what a "billion laughs" file asks for.
MAX_ALIAS_VALUES = 100_000
# No schema goes deeper than ten levels; past this the file is not a config.
MAX_DEPTH = 50

# libyaml's parser where PyYAML has it (its wheels do): the pure-Python one costs
# about 0.35 s per 1,000 lines.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def config_path(cli_value: Path | None) -> Path:
    """``--config``, else ``$MENTORPULSE_CONFIG``, else ``./config/mentorpulse.yaml``."""
    if cli_value is not None:
        return cli_value
    from_env = os.environ.get(ENV_CONFIG, "").strip()
    if from_env:
        return Path(from_env)
    return DEFAULT_CONFIG


def load_config(path: Path) -> MentorpulseConfig:
    """Load and validate one config file; every problem in it is reported at once."""
    text = _read(path)
    built = _Builder(display=str(path))
    data = built.parse(text)
    problems = list(built.problems)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(f"{path}:1: the file must be a mapping of keys (like `programs:`)")
        raise ConfigError(problems)
    if "base_dir" in data:
        # A real field of the model, but set by us from the file's location, not by the file.
        problems.append(built.problem(("base_dir",), (), "unknown key 'base_dir'"))
        data = {k: v for k, v in data.items() if k != "base_dir"}

    problems.extend(_check_paths(data, path.parent, built))
    try:
        config = MentorpulseConfig.model_validate(data)
    except ValidationError as error:
        # A value whose ${...} failed is already reported; its empty stand-in is not.
        problems.extend(
            built.problem_for(detail, data)
            for detail in error.errors()
            if _data_path(tuple(detail["loc"]), data) not in built.unresolved
        )
        config = None
    if problems or config is None:
        problems = sorted(dict.fromkeys(problems), key=_line_of)
        log.debug("config_invalid", path=str(path), problems=len(problems))
        raise ConfigError(problems)

    config = config.model_copy(update={"base_dir": path.parent})
    log.debug("config_loaded", path=str(path), programs=len(config.programs))
    return config


def key_line(path: Path, keys: KeyPath) -> int:
    """The line of ``keys`` (or its nearest parent) in a config file that loaded cleanly,
    for checks made after loading (e.g. against the roster) to point at the right line."""
    try:
        stat = path.stat()
    except OSError:
        return 1
    lines = _lines(str(path), stat.st_mtime_ns, stat.st_size)
    for end in range(len(keys), -1, -1):
        if keys[:end] in lines:
            return lines[keys[:end]]
    return 1


@functools.lru_cache(maxsize=4)
def _lines(path: str, _mtime_ns: int, _size: int) -> dict[KeyPath, int]:
    """The key lines of one version of a file: parsed once, however many lines are asked
    for (a check reporting one problem per pattern used to parse the file per problem)."""
    built = _Builder(display=path)
    built.parse(_read(Path(path)))
    return built.lines


def _check_paths(data: dict[str, Any], base_dir: Path, built: _Builder) -> list[str]:
    """The database's folder must exist (the data folder itself is made on first use):
    checked now, at its line, rather than at the first connection. Reads the raw data, so
    it is reported with every other problem of the file. (Source paths are checked by
    `config check` only: a calendar folder that goes missing while mentorpulse runs is
    that source failing, which `status` shows.)"""
    database = data.get("database")
    configured = data.get("data_dir")
    state = state_dir(base_dir, configured if isinstance(configured, str) else None)
    sqlite = sqlite_path(database, state) if isinstance(database, str) else None
    if sqlite is None:
        return []
    folder = sqlite.parent
    if folder.is_dir() or folder.resolve() == state.resolve():
        return []
    return [
        built.problem(
            ("database",),
            ("database",),
            f"the database's folder {folder} does not exist "
            "(create it, or point the URL at an existing folder)",
        )
    ]


def check_source_paths(config: MentorpulseConfig, config_file: Path) -> None:
    """Every ``ics`` source path exists on this machine (`config check`), each missing
    one at its line."""
    problems: list[str] = []
    for index, source in enumerate(config.sources):
        if not isinstance(source, IcsSource) or source.path is None:
            continue
        resolved = config.resolve(source.path)
        if not resolved.exists():
            keys: KeyPath = ("sources", index, "path")
            problems.append(
                f"{config_file}:{key_line(config_file, keys)}: {format_key_path(keys)}: "
                f"{resolved} does not exist (a .ics file or a folder of them; relative to "
                "the config file's folder)"
            )
    if problems:
        raise ConfigError(problems)


class _SchemaGenerator(GenerateJsonSchema):
    """Show defaults the way an admin writes them (``14d``), not as ISO 8601 (``P14D``)."""

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, timedelta):
            return format_duration(dft)
        if isinstance(dft, BaseModel):
            return dft.model_dump(mode="json", by_alias=True)
        return super().encode_default(dft)


def json_schema() -> dict[str, object]:
    """The JSON Schema of ``mentorpulse.yaml``, for editors' completion and checks."""
    schema: dict[str, Any] = MentorpulseConfig.model_json_schema(
        by_alias=True, schema_generator=_SchemaGenerator
    )
    schema.get("properties", {}).pop("base_dir", None)
    if "base_dir" in schema.get("required", []):
        schema["required"].remove("base_dir")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": "mentorpulse.yaml",
    }


def _read(path: Path) -> str:
    hint = (
        f"create it: run `mentorpulse demo` to write a sample, or copy config/mentorpulse.yaml "
        f"from the mentorpulse sources and edit it (choose another file with --config or "
        f"${ENV_CONFIG})"
    )
    if not path.exists():
        raise ConfigError([f"{path}: no such config file; {hint}"])
    if path.is_dir():
        raise ConfigError([f"{path}: is a folder, not a config file; {hint}"])
    try:
        with path.open("rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise ConfigError([f"{path}: cannot read the config file: {error.strerror}"]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            [
                f"{path}:1: the config file is larger than {MAX_CONFIG_BYTES // 2**20} MB; "
                "a config holds programs, rules and a few contacts: keep the pairs in the "
                "roster CSV"
            ]
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(
            [f"{path}: not UTF-8 text (byte {error.start}); save the file as UTF-8"]
        ) from None


def _line_of(problem: str) -> int:
    """Sort key: the line number right after the path, problems without one first."""
    found = re.match(r"^.*?:(\d+)(?::\d+)?: ", problem)
    return int(found.group(1)) if found else 0


def format_key_path(path: KeyPath) -> str:
    """``('programs', 0, 'cadence')`` → ``programs[0].cadence``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


@dataclass
class _Builder:
    """Builds python data from the YAML node tree, noting lines and interpolations."""

    display: str
    lines: dict[KeyPath, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    # (text that may appear in a message, what to show instead)
    redactions: dict[str, str] = field(default_factory=dict)
    # key paths of values whose ${...} reference could not be resolved
    unresolved: set[KeyPath] = field(default_factory=set)
    _loader: yaml.SafeLoader | None = None
    _active: set[int] = field(default_factory=set)
    # ids of the nodes built once: building one again is an alias expanding
    _built: set[int] = field(default_factory=set)
    _aliased: int = 0
    _alias_at: KeyPath | None = None
    # merge keys (``<<``) resolved once per mapping node: its pairs, merged ones first
    _pairs: dict[int, list[tuple[Node, Node]]] = field(default_factory=dict)

    def parse(self, text: str) -> Any:
        loader = _Loader(text)
        self._loader = loader
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            self.lines[()] = node.start_mark.line + 1
            return self._build(node, ())
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            where = f"{self.display}:{mark.line + 1}:{mark.column + 1}" if mark else self.display
            # Only the problem and context: PyYAML's own str() quotes a snippet of the file.
            context = error.context or ""
            cmark = error.context_mark
            if context and cmark is not None and mark is not None and cmark.line != mark.line:
                context += f" (line {cmark.line + 1}, column {cmark.column + 1})"
            what = "; ".join(p for p in (context, error.problem) if p)
            raise ConfigError([f"{where}: YAML syntax error: {what}"]) from None
        except yaml.YAMLError as error:
            raise ConfigError([f"{self.display}: YAML error: {type(error).__name__}"]) from None
        finally:
            loader.dispose()

    def _build(self, node: Node, path: KeyPath, aliased: bool = False) -> Any:
        if id(node) in self._active:
            self.problems.append(self._at(node, path, "an alias refers to itself"))
            return None
        if len(path) > MAX_DEPTH:
            raise ConfigError([self._at(node, (), f"nested more than {MAX_DEPTH} levels deep")])
        # The node an alias (``*name``) stands for: where its expansion is charged.
        alias_root = not aliased and id(node) in self._built
        aliased = aliased or alias_root
        if alias_root:
            outer, self._alias_at = self._alias_at, path
        if aliased:
            self._spend(1, path)
        else:
            self._built.add(id(node))
        self._active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, path, aliased)
            if isinstance(node, SequenceNode):
                result: list[Any] = []
                for index, item in enumerate(node.value):
                    self.lines.setdefault((*path, index), item.start_mark.line + 1)
                    result.append(self._build(item, (*path, index), aliased))
                return result
            assert isinstance(node, ScalarNode)
            if node.tag == _STR_TAG:
                return self._interpolate(node, path)
            assert self._loader is not None
            try:
                return self._loader.construct_object(node, deep=True)
            except ValueError:  # e.g. an integer of more than 4,300 digits
                self.problems.append(self._at(node, path, "not a value this file can hold"))
                return None
        finally:
            self._active.discard(id(node))
            if alias_root:
                self._alias_at = outer

    def _spend(self, values: int, path: KeyPath) -> None:
        """Count values that aliases add; refuse a file whose aliases multiply."""
        self._aliased += values
        if self._aliased > MAX_ALIAS_VALUES + len(self._built):
            where = self._alias_at if self._alias_at is not None else path
            # A list item's line is its anchor's (PyYAML forgets where the alias was
            # written): point at the list's key instead.
            while where and isinstance(where[-1], int):
                where = where[:-1]
            raise ConfigError(
                [
                    self.problem(
                        where,
                        where,
                        f"aliases expand to more than {MAX_ALIAS_VALUES:,} values beyond the "
                        "file's own (aliases of aliases multiply); write the values out or "
                        "use fewer aliases",
                    )
                ]
            )

    def _merged_pairs(self, node: MappingNode, path: KeyPath) -> list[tuple[Node, Node]]:
        """The mapping's pairs with ``<<`` merge keys resolved: merged pairs first (the
        first mapping listed wins, each key once), then its own.

        PyYAML's ``flatten_mapping`` copies every merged pair into every mapping that
        merges it, duplicates included, so merges of merges grow without bound; here each
        mapping keeps one pair per key and the work is counted against the alias bound.
        """
        known = self._pairs.get(id(node))
        if known is not None:
            return known
        own: list[tuple[Node, Node]] = []
        sources: list[MappingNode] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                own.append((key_node, value_node))
                continue
            items = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for item in items:
                if isinstance(item, MappingNode):
                    sources.append(item)
                else:
                    self.problems.append(
                        self._at(item, path, "<< merges mappings only (write << : *name)")
                    )
        merged: dict[object, tuple[Node, Node]] = {}
        added = id(node) not in self._active  # _build marks the node it builds itself
        self._active.add(id(node))
        try:
            for source in reversed(sources):
                if id(source) in self._active:
                    self.problems.append(self._at(source, path, "an alias refers to itself"))
                    continue
                pairs = self._merged_pairs(source, path)
                self._spend(len(pairs), path)
                for key_node, value_node in pairs:
                    merged[_key_of(key_node)] = (key_node, value_node)
        finally:
            if added:
                self._active.discard(id(node))
        result = [*merged.values(), *own]
        self._pairs[id(node)] = result
        return result

    def _mapping(self, node: MappingNode, path: KeyPath, aliased: bool) -> dict[str, Any]:
        own = {id(key) for key, _ in node.value if key.tag != _MERGE_TAG}
        result: dict[str, Any] = {}
        seen: dict[str, int] = {}
        for key_node, value_node in self._merged_pairs(node, path):
            if not isinstance(key_node, ScalarNode):
                self.problems.append(self._at(key_node, path, "keys must be plain words"))
                continue
            # The raw text, not YAML 1.1's reading of it: a key `no:` is "no", not False.
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            mine = id(key_node) in own
            if key in seen and mine:
                self.problems.append(
                    self._at(key_node, path, f"duplicate key {key!r} (first on line {seen[key]})")
                )
            if mine:
                seen.setdefault(key, line)
            self.lines[(*path, key)] = line
            result[key] = self._build(value_node, (*path, key), aliased or not mine)
        return result

    def _interpolate(self, node: ScalarNode, path: KeyPath) -> str:
        raw = str(node.value)
        if "$" not in raw:
            return raw
        used: list[str] = []

        def replace(found: re.Match[str]) -> str:
            if found.group(0) == "$${":
                return "${"
            reference = _NAME_DEFAULT.match(found.group(1))
            if reference is None:
                self.unresolved.add(path)
                self.problems.append(
                    self._at(
                        node,
                        path,
                        "malformed ${...} reference (write ${NAME} or ${NAME:-default}; "
                        "$${ for a literal ${)",
                    )
                )
                return ""
            name, default = reference.group(1), reference.group(2)
            value = os.environ.get(name)
            if value:
                if len(value) >= _MIN_REDACT:
                    self.redactions[value] = f"${{{name}}}"
                used.append(name)
                return value
            if default is not None:
                return default
            self.unresolved.add(path)
            self.problems.append(
                self._at(
                    node,
                    path,
                    f"environment variable {name} is not set "
                    f"(set it, or give a default: ${{{name}:-default}})",
                )
            )
            return ""

        result = _REFERENCE.sub(replace, raw)
        if used and result:
            self.redactions[result] = raw
        return result

    def _at(self, node: Node, path: KeyPath, message: str) -> str:
        where = f"{self.display}:{node.start_mark.line + 1}"
        keys = format_key_path(path)
        return f"{where}: {keys}: {message}" if keys else f"{where}: {message}"

    def problem(self, path: KeyPath, shown: KeyPath, message: str) -> str:
        """``file:line: key.path: message`` with the line of ``path`` or its nearest parent."""
        line = 1
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                line = self.lines[path[:end]]
                break
        keys = format_key_path(shown)
        message = self._redact(message)
        return (
            f"{self.display}:{line}: {keys}: {message}"
            if keys
            else f"{self.display}:{line}: {message}"
        )

    def problem_for(self, detail: ErrorDetails, data: dict[str, Any]) -> str:
        loc = tuple(detail["loc"])
        path = _data_path(loc, data)
        kind = detail["type"]
        ctx = detail.get("ctx") or {}
        if kind == "extra_forbidden" and path:
            key = str(path[-1])
            message = f"unknown key {key!r}"
            close = difflib.get_close_matches(key, _known_keys(loc[:-1]), n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
            return self.problem(path, path[:-1], message)
        if kind == "missing":
            return self.problem(path, path, "missing required key")
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            tag_key = str(ctx.get("discriminator", "'kind'")).strip("'\"")
            what = _singular(path)
            expected = str(ctx.get("expected_tags", "")).replace("'", "")
            if not expected:
                expected = ", ".join(_known_tags(loc, tag_key))
            if kind == "union_tag_not_found":
                message = f"missing required key (a {what} needs {tag_key}: one of {expected})"
            else:
                message = (
                    f"unknown {what} {tag_key} {str(ctx.get('tag', ''))!r} "
                    f"(expected one of: {expected})"
                )
            return self.problem((*path, tag_key), (*path, tag_key), message)
        if kind == "value_error" and isinstance(ctx.get("error"), ConfigValueError):
            at = ctx["error"].at
            return self.problem((*path, *at), (*path, *at), _clean(detail))
        return self.problem(path, path, _clean(detail))

    def _redact(self, message: str) -> str:
        for secret in sorted(self.redactions, key=len, reverse=True):
            message = message.replace(secret, self.redactions[secret])
        return message


def _key_of(node: Node) -> object:
    """What makes two merged keys the same key: their text (a non-scalar key is only
    itself, and is reported when it is built)."""
    return node.value if isinstance(node, ScalarNode) else id(node)


def _data_path(loc: tuple[str | int, ...], data: Any) -> KeyPath:
    """Pydantic's ``loc`` without the union-member labels it adds (``'cadence_gap'``)."""
    out: list[str | int] = []
    current = data
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        in_dict = isinstance(current, dict) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_dict or in_list:
            out.append(part)
            current = current[part]
        elif isinstance(current, dict) and current.get("kind") == part:
            continue
        elif last and not (isinstance(part, str) and part.startswith(("function-", "["))):
            out.append(part)
        # Anything else is a label pydantic added (a union member, ``[key]``): skip it.
    return tuple(out)


_SINGULAR = {"sources": "source", "rules": "rule", "transport": "transport"}


def _singular(path: KeyPath) -> str:
    for part in reversed(path):
        if isinstance(part, str):
            return _SINGULAR.get(part, part.rstrip("s"))
    return "item"


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types an annotation can hold: ``Annotated``, ``X | None`` peeled off."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _unwrap(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        out: list[Any] = []
        for arg in get_args(annotation):
            if arg is not type(None):
                out.extend(_unwrap(arg))
        return out
    return [annotation]


def _walk(loc: tuple[str | int, ...]) -> list[Any]:
    """The types the schema allows at ``loc``, following pydantic's loc conventions."""
    current: list[Any] = [MentorpulseConfig]
    for part in loc:
        following: list[Any] = []
        for annotation in current:
            origin = get_origin(annotation)
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                if isinstance(part, str):
                    for name, info in annotation.model_fields.items():
                        if part in (info.alias, name):
                            following.extend(_unwrap(info.annotation))
                    kind = annotation.model_fields.get("kind")
                    if kind is not None and part in get_args(kind.annotation):
                        following.append(annotation)
            elif origin in (tuple, list) and isinstance(part, int):
                following.extend(_unwrap(get_args(annotation)[0]))
            elif origin is dict and isinstance(part, str):
                following.extend(_unwrap(get_args(annotation)[1]))
        current = following
    return current


def _known_keys(loc: tuple[str | int, ...]) -> list[str]:
    keys: list[str] = []
    for annotation in _walk(loc):
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(info.alias or name for name, info in annotation.model_fields.items())
    return keys


def _known_tags(loc: tuple[str | int, ...], tag_key: str) -> list[str]:
    tags: list[str] = []
    for annotation in _walk(loc):
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            info = annotation.model_fields.get(tag_key)
            if info is not None and get_origin(info.annotation) is Literal:
                tags.extend(str(arg) for arg in get_args(info.annotation))
    return tags


_TYPE_MESSAGES = {
    "model_type": "expected a mapping of keys",
    "model_attributes_type": "expected a mapping of keys",
    "dict_type": "expected a mapping of keys",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "string_type": "expected a text value",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
}


def _clean(detail: ErrorDetails) -> str:
    """Pydantic's message without its prefixes and in our words; never the input value."""
    kind = detail["type"]
    if kind in _TYPE_MESSAGES:
        return _TYPE_MESSAGES[kind]
    message = detail["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if message.startswith("Input should be "):
        message = "expected " + message.removeprefix("Input should be ")
    return message
