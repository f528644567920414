"""Reading a study file's bytes into plain data, strictly and within bounds.

PyYAML's ``safe_load`` is too forgiving for a file that decides hours of GPU time: it keeps the
last of two equal keys, reads ``yes``/``on`` as True and ``1:30`` as 90 (YAML 1.1), expands
aliases without limit (a 500-byte "billion laughs" document becomes gigabytes when printed or
validated) and recurses once per nesting level (10,000 levels raise ``RecursionError``).
``read_study_document`` instead:

- decodes UTF-8 strictly (a bad byte is reported with its offset);
- walks the event stream first (no recursion) and refuses nesting deeper than ``MAX_DEPTH`` and
  more than ``MAX_ALIASES`` aliases;
- resolves plain scalars by the YAML 1.2 core schema: ``true``/``false`` only are booleans,
  integers are decimal, ``0o``/``0x``; no timestamps (dates stay strings), no sexagesimal numbers;
- reports every duplicate key (with both lines) instead of keeping the last one;
- refuses a document whose expanded size (aliases counted as copies) exceeds ``MAX_NODES``.

Problems come back as ``StudyError`` values so that the validator lists them with all others.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

from ablations.study_errors import StudyError

MAX_DEPTH = 32
MAX_ALIASES = 64
MAX_NODES = 20_000


class StudyLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core scalars that records duplicate keys instead of dropping them."""

    yaml_implicit_resolvers: dict = {}

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[StudyError] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    self.duplicates.append(StudyError(
                        "", f"duplicate key {str(key)[:80]!r} at line {line} (first at line "
                            f"{seen[key]}); remove one of them"))
                seen.setdefault(key, line)
        return super().construct_mapping(node, deep=deep)


_CORE_RESOLVERS = [
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    ("tag:yaml.org,2002:float",
     r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
     r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", list("-+.0123456789")),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:merge", r"^(?:<<)$", ["<"]),
]
for _tag, _pattern, _first in _CORE_RESOLVERS:
    StudyLoader.add_implicit_resolver(_tag, re.compile(_pattern), _first)


def _construct_int(loader: StudyLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    if text.startswith(("0o", "0x")):
        return int(text, 0)
    return int(text, 10)


def _construct_float(loader: StudyLoader, node: yaml.ScalarNode) -> float:
    text = str(loader.construct_scalar(node)).lower()
    if text.endswith("inf"):
        return -math.inf if text.startswith("-") else math.inf
    if text.endswith("nan"):
        return math.nan
    return float(text)


StudyLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
StudyLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def decode_study_bytes(data: bytes) -> tuple[str | None, list[StudyError]]:
    """UTF-8 text of a study file (a leading BOM dropped), or the error naming the bad byte."""
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError as exc:
        byte = data[exc.start:exc.start + 1].hex()
        return None, [StudyError("", f"not UTF-8 text: byte 0x{byte} at offset {exc.start} "
                                     f"({exc.reason}); save the file as UTF-8")]


def _event_problems(text: str) -> list[StudyError]:
    """Depth and alias count, from the event stream (iterative: no recursion on deep input)."""
    depth = deepest = aliases = 0
    for event in yaml.parse(text, Loader=StudyLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                return [StudyError("", f"nesting deeper than {MAX_DEPTH} levels "
                                       f"(line {event.start_mark.line + 1})")]
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                return [StudyError("", f"more than {MAX_ALIASES} YAML aliases (*name); write the "
                                       "values out")]
    return []


def expanded_size(node: yaml.Node, limit: int) -> int:
    """Node count with every alias expanded (shared nodes counted once per use); stops past
    ``limit``. Recursive aliases count as past the limit."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def size(current: yaml.Node) -> int:
        key = id(current)
        if key in sizes:
            return sizes[key]
        if key in on_path:
            return limit + 1
        on_path.add(key)
        children: list[yaml.Node] = []
        if isinstance(current, yaml.SequenceNode):
            children = list(current.value)
        elif isinstance(current, yaml.MappingNode):
            children = [part for pair in current.value for part in pair]
        total = 1
        for child in children:
            total += size(child)  # depth is bounded by MAX_DEPTH, checked before
            if total > limit:
                break
        on_path.discard(key)
        sizes[key] = min(total, limit + 1)
        return sizes[key]

    return size(node)


def read_study_document(data: bytes) -> tuple[Any, list[StudyError]]:
    """(parsed document, problems). The document is None when it cannot be read at all."""
    text, problems = decode_study_bytes(data)
    if text is None:
        return None, problems
    try:
        problems = _event_problems(text)
        if problems:
            return None, problems
        loader = StudyLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None and expanded_size(node, MAX_NODES) > MAX_NODES:
                return None, [StudyError("", f"the document expands to more than {MAX_NODES} "
                                             "values (aliases are copied where used)")]
            document = loader.construct_document(node) if node is not None else None
            return document, loader.duplicates
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        return None, [StudyError("", f"invalid YAML: {str(exc)[:500]}")]


def non_finite_numbers(document: Any) -> list[StudyError]:
    """Every ``.inf`` / ``.nan`` in the document, by path (bounded by MAX_NODES and MAX_DEPTH)."""
    found: list[StudyError] = []
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            found.append(StudyError(path, "must be a finite number", value))
        elif isinstance(value, dict):
            stack.extend((f"{path}.{k}" if path else str(k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(value))
    return found
