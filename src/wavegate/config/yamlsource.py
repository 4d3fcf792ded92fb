"""YAML documents that remember where each value was written.

Config errors must name the file, the line and the field. `load` returns the plain data and a
`Source` that maps a field path such as `("clusters", 2, "region")` to its line, so validation
can stay in plain Python and still point at the right place.

Every file is read as if it were hostile, because fleet files and apps come from pull requests:
a file over `MAX_BYTES` is refused before it is parsed, and aliases may not expand a document
beyond `MAX_EXPANSION` times its own size (an alias bomb such as "billion laughs" is refused in
milliseconds instead of hanging whatever walks the result); an alias to itself and nesting too
deep to walk (over `MAX_DEPTH` levels) are refused too.

Files are composed by libyaml (PyYAML's C loader) when it is present: its nodes keep their
lines, so the line map costs nothing extra, and the data is built from those same nodes instead
of parsing the text a second time. Whatever libyaml refuses is parsed again by the pure-Python
loader, so every error reads exactly as it always has.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from wavegate.errors import InputError

FieldPath = tuple[str | int, ...]
T = TypeVar("T")
MAX_BYTES = 10 * 1024 * 1024
MAX_EXPANSION = 10  # nodes after alias expansion, per node written
MAX_DEPTH = 400  # nesting levels; what the pure-Python loader could walk, made explicit
_EXPANSION_FLOOR = 1000  # a small file may use a few anchors freely
_FAST_LOADER: Any = getattr(yaml, "CSafeLoader", None)  # None where libyaml is not installed


@dataclass(frozen=True)
class Source:
    file: Path
    lines: dict[FieldPath, int] = field(default_factory=dict)

    def line(self, path: FieldPath) -> int | None:
        """Line of `path`, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None

    def error(self, path: FieldPath, message: str) -> InputError:
        return InputError(message, file=self.file, line=self.line(path), field=dotted(path))


def dotted(path: Iterable[str | int]) -> str | None:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or None


def load(path: Path) -> tuple[Any, Source]:
    """The single document in `path`, as data plus its line map."""
    return parse(read_text(path), path)


def read_text(path: Path) -> str:
    """A YAML file's text; refused unread when it is larger than any config should be."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise InputError(f"file is {size / 2**20:.1f} MiB; files over "
                             f"{MAX_BYTES // 2**20} MiB are refused", file=path)
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"cannot read: {error.strerror}", file=path) from None
    except UnicodeDecodeError as error:
        raise InputError(f"not UTF-8 text ({error.reason} at byte {error.start})",
                         file=path) from None


def parse(text: str, path: Path) -> tuple[Any, Source]:
    fast = _fast_documents(text, path)
    if fast is not None and len(fast) <= 1:
        return fast[0] if fast else (None, Source(path))
    nodes = compose_all(text, path)
    data = _construct(lambda: yaml.safe_load(text), path)  # refuses a second document
    return data, _lines(nodes[0] if nodes else None, path)


def _lines(node: yaml.Node | None, path: Path) -> Source:
    source = Source(path)
    if node is not None:
        _construct(lambda: _record_lines(node, (), source), path)  # as deep as libyaml allows
    return source


def compose_all(text: str, path: Path) -> list[yaml.Node]:
    """The node trees of every document in `text`, once they are known safe to walk."""
    if len(text) > MAX_BYTES:
        raise InputError(f"text is over {MAX_BYTES // 2**20} MiB; refused", file=path)
    nodes = _construct(lambda: list(yaml.compose_all(text, Loader=yaml.SafeLoader)), path)
    _construct(lambda: _vet(nodes, path), path)
    return nodes


def _vet(nodes: list[yaml.Node], path: Path, *, aliases: bool = True) -> None:
    """Refuse aliases that expand the documents far beyond what is written."""
    if not aliases:
        return
    seen: set[int] = set()
    written = sum(_count(node, seen) for node in nodes)
    budget = max(_EXPANSION_FLOOR, MAX_EXPANSION * written)
    sizes: dict[int, int] = {}
    expanded = sum(_expanded(node, sizes, set(), budget, path) for node in nodes)
    if expanded > budget:
        raise InputError(f"YAML aliases expand this file to over {budget} nodes from {written} "
                         "written; refused (an alias bomb?)", file=path)


def parse_all(text: str, path: Path) -> list[tuple[Any, Source]]:
    """Every document of a multi-document file (manifest templates)."""
    fast = _fast_documents(text, path)
    if fast is not None:
        return fast
    nodes = compose_all(text, path)
    documents = _construct(lambda: list(yaml.safe_load_all(text)), path)
    return [(data, _lines(node, path)) for node, data in zip(nodes, documents, strict=True)]


def _fast_documents(text: str, path: Path) -> list[tuple[Any, Source]] | None:
    """Each document's data and line map from one pass of libyaml, vetted like `compose_all`;
    None when libyaml is missing or finds any problem (the pure-Python loader then says what)."""
    if _FAST_LOADER is None or len(text) > MAX_BYTES:
        return None
    loader = _FAST_LOADER(text)
    try:
        nodes = []
        while loader.check_node():
            nodes.append(loader.get_node())
        _vet(nodes, path, aliases="*" in text)  # an alias is written `*name`
        # Lines first: building the data rewrites merge keys (`<<`) inside the nodes.
        sources = [_lines(node, path) for node in nodes]
        return [(loader.construct_document(node), source)
                for node, source in zip(nodes, sources, strict=True)]
    except (yaml.YAMLError, RecursionError, InputError):
        return None
    finally:
        loader.dispose()


def _construct(build: Callable[[], T], path: Path) -> T:
    try:
        return build()
    except yaml.YAMLError as error:
        raise _syntax_error(error, path) from None
    except RecursionError:
        raise InputError("YAML nested too deeply to read", file=path) from None


def _count(node: yaml.Node, seen: set[int]) -> int:
    """Nodes as written: an aliased node counts once."""
    if id(node) in seen:
        return 0
    seen.add(id(node))
    return 1 + sum(_count(child, seen) for child in _children(node))


def _expanded(node: yaml.Node, sizes: dict[int, int], open_: set[int], budget: int,
              path: Path) -> int:
    """Nodes once aliases are expanded, memoised per node so a bomb costs what it is written
    in; stops counting past `budget`."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise InputError(f"YAML alias refers to itself (line {node.start_mark.line + 1})",
                         file=path)
    open_.add(key)
    total = 1
    for child in _children(node):
        total += _expanded(child, sizes, open_, budget, path)
        if total > budget:
            break
    open_.discard(key)
    sizes[key] = total
    return total


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _syntax_error(error: yaml.YAMLError, path: Path) -> InputError:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or "invalid YAML"
    line = mark.line + 1 if mark is not None else None
    return InputError(f"YAML syntax error: {problem}", file=path, line=line)


def _record_lines(node: yaml.Node, path: FieldPath, source: Source) -> None:
    """Note each field's line; a key written twice is an error (YAML would keep the last)."""
    if len(path) > MAX_DEPTH:
        raise InputError("YAML nested too deeply to read", file=source.file,
                         line=node.start_mark.line + 1)
    source.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = path + (str(key_node.value),)
            if key_node.value in seen:
                raise InputError(f"duplicate key {key_node.value!r}", file=source.file,
                                 line=key_node.start_mark.line + 1, field=dotted(key))
            seen.add(key_node.value)
            source.lines[key] = key_node.start_mark.line + 1
            _record_lines(value_node, key, source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, path + (index,), source)
