"""The bounded YAML loader: what safe_load reads, it reads alike; bombs and towers it refuses."""

from __future__ import annotations

import contextlib
import sys

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from metalflow import yamlload
from metalflow.yamlload import MAX_DEPTH, MIN_ALIAS_BUDGET, YamlLimitError


def laughs(levels: int, width: int = 9) -> str:
    """The "billion laughs": each level a list of `width` aliases to the one before."""
    lines = ['l0: &l0 "lol"']
    for level in range(1, levels + 1):
        refs = ", ".join([f"*l{level - 1}"] * width)
        lines.append(f"l{level}: &l{level} [{refs}]")
    return "\n".join(lines) + "\n"


def refusal(text: str) -> YamlLimitError:
    with pytest.raises(YamlLimitError) as info:
        list(yamlload.load_all(text))
    return info.value


def line_of(error: yaml.MarkedYAMLError) -> int:
    assert error.problem_mark is not None
    return int(error.problem_mark.line) + 1


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\nb: [x, 'y', {c: 2024-01-01}]\n",
        "base: &b {x: 1, y: 2}\nm: {<<: *b, z: 3}\nn: {<<: [*b], y: 9}\n",
        "- &s shared\n- *s\n- [*s, *s]\n",
        "---\na: &x 1\n---\nb: &x 2\nc: *x\n",
        "mode: 0600\non: yes\nn: ~\nf: .inf\n",
        laughs(3),
    ],
)
def test_reads_what_safe_load_reads(text: str) -> None:
    assert list(yamlload.load_all(text)) == list(yaml.safe_load_all(text))


def test_compose_gives_the_node_tree_yaml_compose_gives() -> None:
    text = "version: '0.1'\ntasks: [{name: a}]\n"
    ours, theirs = yamlload.compose(text), yaml.compose(text)
    assert ours is not None and theirs is not None
    assert yaml.serialize(ours) == yaml.serialize(theirs)


def test_a_billion_laughs_is_refused_at_the_alias_that_crosses_the_budget() -> None:
    error = refusal(laughs(9))
    assert "alias *l" in str(error.problem)
    assert f"at least {MIN_ALIAS_BUDGET:,}" in str(error.problem)
    assert line_of(error) <= 6  # 9 ** 5 laughs are past the budget; later levels never compose


def test_an_alias_to_one_long_string_counts_its_characters() -> None:
    text = f"s: &s {'x' * 2_000}\nl: [{', '.join(['*s'] * 50)}]\n"
    error = refusal(text)
    assert line_of(error) == 2 and "alias *s" in str(error.problem)


def test_aliases_may_add_as_much_as_a_large_stream_writes() -> None:
    written = "".join(f"k{i}: value-{i}\n" for i in range(2_000))
    text = f"{written}s: &s {'x' * 2_000}\nl: [{', '.join(['*s'] * 10)}]\n"
    assert len(next(yamlload.load_all(text))["l"]) == 10


def test_a_recursive_alias_is_refused() -> None:
    error = refusal("a: &a [1, *a]\n")
    assert "recursive" in str(error.problem) and line_of(error) == 1


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 3_000, 50_000])
def test_nesting_past_the_limit_is_refused_with_the_line(depth: int) -> None:
    error = refusal("a: 1\nb: " + "[" * depth + "]" * depth + "\n")
    assert error.problem == f"nesting deeper than {MAX_DEPTH} levels; flatten the document"
    assert line_of(error) == 2


def test_block_nesting_past_the_limit_is_refused_with_the_line() -> None:
    text = "".join("  " * level + f"k{level}:\n" for level in range(MAX_DEPTH + 5))
    error = refusal(text)
    assert "nesting deeper" in str(error.problem) and line_of(error) == MAX_DEPTH + 1


def test_nesting_at_the_limit_is_read() -> None:
    [value] = yamlload.load_all("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    for _ in range(MAX_DEPTH - 1):
        value = value[0]
    assert value == []


def test_aliases_that_stack_lists_past_the_limit_are_refused() -> None:
    """Each list holds the one before: few characters, but deep once expanded."""
    lines = ["l0: &l0 [x]"] + [f"l{i}: &l{i} [*l{i - 1}]" for i in range(1, MAX_DEPTH + 1)]
    error = refusal("\n".join(lines) + "\n")
    assert "nests the document deeper" in str(error.problem)
    assert line_of(error) == MAX_DEPTH


def test_merge_keys_chained_past_the_limit_are_refused_before_they_recurse() -> None:
    lines = ["m0: &m0 {k0: 0}"]
    chain = range(1, sys.getrecursionlimit())
    lines += [f"m{i}: &m{i} {{<<: *m{i - 1}, k{i}: {i}}}" for i in chain]
    with pytest.raises(YamlLimitError):
        list(yamlload.load_all("\n".join(lines) + "\n"))


@given(st.text(max_size=60))
def test_raises_only_yaml_errors(text: str) -> None:
    with contextlib.suppress(yaml.YAMLError):
        list(yamlload.load_all(text))


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
        ),
        max_leaves=30,
    )
)
def test_what_yaml_dumps_it_reads_back(value: object) -> None:
    assert list(yamlload.load_all(yaml.safe_dump(value))) == [value]


@pytest.mark.parametrize(
    ("text", "line"),
    [("kind: [unclosed", 1), ("a: 1\nb: [\n", 3), ("a: {b: c\n\nd: e]\n", 3), ("a: 1\nb: 'x", 2)],
)
def test_errors_name_the_line_pyyaml_names(text: str, line: int) -> None:
    with pytest.raises(yaml.MarkedYAMLError) as info:
        list(yamlload.load_all(text))
    assert yamlload.error_line(info.value, text) == line
    with pytest.raises(yaml.MarkedYAMLError) as theirs:
        list(yaml.safe_load_all(text))
    assert yamlload.error_line(theirs.value, text) == line
