"""Properties that hold for any input, found by hypothesis."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from metalflow.templates import TemplateError, check_template, render_template
from metalflow.templates.functions import format_partition
from metalflow.templates.gotemplate import render

FAST = settings(max_examples=150, deadline=None)
DATA: dict[str, Any] = {"s": "x", "l": ["a", "b"], "m": {"k": "v"}, "n": 1}
HARDWARE: dict[str, Any] = {"spec": {"disks": [{"device": "/dev/sda"}]}}


def go(text: str, **data: Any) -> str:
    return render(text, data, limit=1 << 20)


@FAST
@given(st.text().filter(lambda t: "{{" not in t))
def test_text_without_actions_renders_to_itself(text: str) -> None:
    assert go(text) == text


fragments = st.sampled_from(
    [
        "{{",
        "}}",
        "{{-",
        "-}}",
        "|",
        ".",
        ".s",
        ".l",
        "$",
        '"',
        "`",
        "(",
        ")",
        " ",
        "\n",
        "if",
        "end",
        "else",
        "range",
        "index",
        "printf",
        "len",
        ":=",
        "1",
        "/*",
        "*/",
        "default",
        "toYaml",
    ]
)


@FAST
@given(st.lists(st.one_of(fragments, st.text(max_size=5)), max_size=25).map("".join))
def test_rendering_fails_only_with_template_error(text: str) -> None:
    with contextlib.suppress(TemplateError):
        check_template(text)
    with contextlib.suppress(TemplateError):
        render_template(text, HARDWARE, {"s": "x"})


@FAST
@given(st.text(alphabet=st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs", "Cc"))))
def test_quote_is_a_json_readable_go_quote(text: str) -> None:
    assert json.loads(go("{{ quote .s }}", s=text)) == text


@FAST
@given(st.text())
def test_case_functions_agree_with_python(text: str) -> None:
    assert go("{{ lower .s }}", s=text) == text.lower()
    assert go("{{ upper .s }}", s=text) == text.upper()


@FAST
@given(st.text(alphabet=st.characters(exclude_characters="\x1c\x1d\x1e\x1f")))
def test_trim_agrees_with_python_strip(text: str) -> None:
    assert go("{{ trim .s }}", s=text) == text.strip()


@FAST
@given(
    st.from_regex(r"/dev/[a-z]{1,8}[0-9]{0,3}(n[0-9])?", fullmatch=True),
    st.integers(min_value=0, max_value=128),
)
def test_format_partition(device: str, number: int) -> None:
    result = format_partition(device, number)
    separator = "p" if device[-1].isdigit() else ""
    assert result == f"{device}{separator}{number}"
    assert go("{{ formatPartition .d .n }}", d=device, n=number) == result


names = st.from_regex(r"[a-z][a-z0-9-]{0,19}", fullmatch=True).filter(lambda n: n != "null")
env_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="'{"),
    max_size=20,
)


@st.composite
def templates(draw: st.DrawFn) -> str:
    lines = [
        'version: "0.1"',
        f"name: {draw(names)}",
        f"global_timeout: {draw(st.integers(0, 10**6))}",
        "tasks:",
    ]
    for task in draw(st.lists(names, min_size=1, max_size=3, unique=True)):
        lines += [f"  - name: {task}", '    worker: "{{ .device_1 }}"', "    actions:"]
        for action in draw(st.lists(names, min_size=1, max_size=3, unique=True)):
            lines += [f"      - name: {action}", "        image: alpine:3", "        environment:"]
            for key, value in draw(
                st.dictionaries(
                    st.from_regex(r"[A-Z]{1,6}", fullmatch=True), env_values, max_size=3
                )
            ).items():
                lines.append(f"          {key}: '{value}'")
            lines.append(f"        retries: {draw(st.integers(0, 5))}")
    return "\n".join(lines) + "\n"


@FAST
@given(templates())
def test_check_and_render_agree_on_structure(text: str) -> None:
    spec = render_template(text, HARDWARE, {"device_1": "aa:bb:cc:dd:ee:ff"})
    probed = check_template(text)
    assert probed.name == spec.name
    assert [[a.name for a in t.actions] for t in probed.tasks] == [
        [a.name for a in t.actions] for t in spec.tasks
    ]
