"""The one YAML loader for what users send (applied documents, templates): bounded in cost.

PyYAML composes an alias as the node it names, so a few hundred bytes of nested aliases
("billion laughs") stand for gigabytes once anything walks them: validation, JSON encoding,
storage. Nesting is composed by recursion, so 3,000 nested `[` end in RecursionError. This
loader bounds both while composing, before anything walks the nodes:

- nesting: at most MAX_DEPTH collections deep, counting what aliases bring in, so everything
  that later recurses over the values (the constructor's merge keys, pydantic, JSON encoding)
  stays far from Python's recursion limit;
- aliases: what they add may not exceed what the stream itself writes (at least
  MIN_ALIAS_BUDGET). Size is counted as values plus scalar characters, about the JSON size, so an
  alias to one long string counts as much as an alias to a large mapping. Aliases are kept rather
  than refused because Kubernetes-style manifests do use them for shared labels and merge keys
  (`<<: *defaults`); go-yaml, which kubectl uses, bounds them by a ratio too.

Parsing uses libyaml's event parser (CParser) when PyYAML has it, with the composing done here:
the C parser releases control to Python for every event, so a large apply parsed in a worker
thread shares the interpreter with the event loop instead of holding it for the whole document.
ruamel.yaml and strictyaml were looked at: neither bounds alias expansion or nesting either, and
the documents are plain YAML 1.1 as PyYAML reads them today.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, MappingStartEvent, SequenceStartEvent
from yaml.resolver import Resolver

MAX_DEPTH = 100
MIN_ALIAS_BUDGET = 10_000


class YamlLimitError(yaml.MarkedYAMLError):
    """A document beyond the loader's bounds; its problem names the limit and the line."""


def _limit(problem: str, mark: Any) -> YamlLimitError:
    """`mark` is PyYAML's or libyaml's Mark: both have the line and column the error names."""
    return YamlLimitError(problem=problem, problem_mark=mark)


def _too_deep(mark: Any) -> YamlLimitError:
    return _limit(f"nesting deeper than {MAX_DEPTH} levels; flatten the document", mark)


class _BoundedComposer(Composer):
    """Composer whose every node is sized (values + scalar characters, aliases expanded) and
    whose nesting is counted; anchors remember their finished size and height."""

    peek_event: Callable[[], Any]  # the parser's, mixed in beside this class

    def __init__(self) -> None:
        Composer.__init__(self)
        self._depth = 0
        self._deepest = 0
        self._written = 0
        self._expanded = 0
        self._finished: dict[str, tuple[int, int]] = {}

    def compose_document(self) -> yaml.Node | None:
        node: yaml.Node | None = super().compose_document()
        self._finished = {}
        return node

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            self._alias(event)
            node: yaml.Node | None = super().compose_node(parent, index)
            return node
        start_expanded, outer_deepest = self._expanded, self._deepest
        weight = 1 + len(getattr(event, "value", "") or "")
        self._written += weight
        self._expanded += weight
        collection = isinstance(event, (SequenceStartEvent, MappingStartEvent))
        if collection:
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise _too_deep(event.start_mark)
        self._deepest = self._depth
        node = super().compose_node(parent, index)
        if collection:
            self._depth -= 1
        if event.anchor is not None:
            height = self._deepest - self._depth
            self._finished[event.anchor] = (self._expanded - start_expanded, height)
        self._deepest = max(outer_deepest, self._deepest)
        return node

    def _alias(self, event: AliasEvent) -> None:
        anchor = event.anchor
        if anchor not in self._finished:
            if anchor in self.anchors:
                raise _limit(
                    f"alias *{anchor} refers to a node that contains it; aliases must not be"
                    " recursive",
                    event.start_mark,
                )
            return  # an undefined alias: PyYAML's own composer reports it
        size, height = self._finished[anchor]
        if self._depth + height > MAX_DEPTH:
            raise _limit(
                f"alias *{anchor} nests the document deeper than {MAX_DEPTH} levels; flatten"
                " the document",
                event.start_mark,
            )
        self._deepest = max(self._deepest, self._depth + height)
        self._expanded += size
        budget = max(MIN_ALIAS_BUDGET, self._written)
        if self._expanded - self._written > budget:
            raise _limit(
                f"alias *{anchor} repeats more than aliases may add to this stream:"
                f" {budget:,} values and characters (as many as the stream writes itself, at"
                f" least {MIN_ALIAS_BUDGET:,}); write the repeated part out",
                event.start_mark,
            )


if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class BoundedLoader(_BoundedComposer, CParser, SafeConstructor, Resolver):
        """SafeLoader's types from libyaml's events, composed within the bounds above."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            _BoundedComposer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

else:  # pragma: no cover - PyYAML built without libyaml

    class BoundedLoader(_BoundedComposer, yaml.SafeLoader):  # type: ignore[no-redef]
        """SafeLoader, composing within the bounds above."""

        def __init__(self, stream: str) -> None:
            yaml.SafeLoader.__init__(self, stream)
            _BoundedComposer.__init__(self)


LIBYAML_TOO_DEEP = "exceeded maximum nesting depth"
"""libyaml's own refusal (at 1,000 levels, while scanning ahead), said as this loader says it."""


def error_line(exc: yaml.YAMLError, text: str) -> int | None:
    """The 1-based line an error names, or None. libyaml puts the end of a stream without a
    final line break on the line after it; such an error is on the last line, as PyYAML says."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is None:
        return None
    line = int(mark.line) + 1
    return line if text.endswith("\n") else min(line, text.count("\n") + 1)


def load_all(text: str) -> Iterator[Any]:
    """The stream's documents as `yaml.safe_load_all` gives them, one at a time, within the
    bounds; YamlLimitError (a MarkedYAMLError) past them."""
    loader = BoundedLoader(text)
    try:
        while loader.check_node():
            yield loader.get_data()
    except yaml.MarkedYAMLError as exc:
        if exc.problem == LIBYAML_TOO_DEEP:
            raise _too_deep(exc.problem_mark) from None
        raise
    finally:
        loader.dispose()


def compose(text: str) -> yaml.Node | None:
    """The single document's node tree, as `yaml.compose` gives it, within the bounds."""
    loader = BoundedLoader(text)
    try:
        node: yaml.Node | None = loader.get_single_node()
        return node
    except yaml.MarkedYAMLError as exc:
        if exc.problem == LIBYAML_TOO_DEEP:
            raise _too_deep(exc.problem_mark) from None
        raise
    finally:
        loader.dispose()
