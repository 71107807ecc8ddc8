"""A Go text/template subset, so stored Tinkerbell templates render here as tink renders them.

Implemented by hand. Looked at on PyPI: `go-template`, `py-go-template` and
`cognihub-pygotemplate` wrap the real Go library through cgo, so they need a Go
toolchain or a prebuilt shared object per platform; `gotpl` is pure Python but
pre-1.0, describes its own Go compatibility as partial, and would be a new
dependency for a few hundred lines of the language that templates actually use.

Semantics follow Go with `missingkey=error`: a missing map key is an error that
names the key and the line of the action, printing follows `fmt`'s `%v`.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from metalflow.templates.functions import (
    FUNCTIONS,
    FunctionError,
    Probe,
    go_print,
    go_quote,
    truth,
)

MAX_DEPTH = 100
LAZY = frozenset({"and", "or"})  # evaluated by the executor so they can short-circuit
MAX_STEPS = 1_000_000


class GoTemplateError(ValueError):
    """A template that cannot be parsed or executed, with the 1-based line at fault."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.message = message
        self.line = line


class OutputTooLarge(GoTemplateError):
    """Rendering stopped because the output passed the caller's limit."""


# ---------------------------------------------------------------- lexer

_SPACE = " \t\r\n"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+"
    r"|(?:\d[\d_]*(?:\.\d*)?(?:[eE][+-]?\d+)?))"
)
_CHAR = re.compile(r"'(\\[^']+|[^\\'\n])'")
_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
}


@dataclass
class Token:
    kind: str  # field var ident string number char ( ) | := = , end
    value: str
    line: int
    spaced: bool  # whitespace came right before it
    literal: Any = None


@dataclass
class Chunk:
    """Raw text, or one action's tokens."""

    line: int
    text: str | None = None
    tokens: list[Token] = field(default_factory=list)


def _unquote(body: str, line: int) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        nxt = body[i + 1 : i + 2]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        widths = {"x": 2, "u": 4, "U": 8}
        if nxt in widths:
            digits = body[i + 2 : i + 2 + widths[nxt]]
            if len(digits) != widths[nxt] or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise GoTemplateError(f"invalid escape \\{nxt}{digits} in string", line)
            code = int(digits, 16)
            if code > 0x10FFFF:
                raise GoTemplateError(f"invalid escape \\{nxt}{digits} in string", line)
            out.append(chr(code))
            i += 2 + widths[nxt]
            continue
        octal = body[i + 1 : i + 4]
        if len(octal) == 3 and all(c in "01234567" for c in octal) and int(octal, 8) < 256:
            out.append(chr(int(octal, 8)))
            i += 4
            continue
        raise GoTemplateError(f"invalid escape \\{nxt} in string", line)
    return "".join(out)


def _number(text: str, line: int) -> int | float:
    clean = text.replace("_", "")
    try:
        if re.fullmatch(r"[+-]?0[xXbBoO].*", clean):
            return int(clean, 0)
        if re.fullmatch(r"[+-]?\d+", clean):
            return int(clean, 8) if re.fullmatch(r"[+-]?0\d+", clean) else int(clean)
        return float(clean)
    except ValueError:
        raise GoTemplateError(f"bad number syntax: {text!r}", line) from None


class _Lines:
    """1-based line of any offset, so every token knows where it came from."""

    def __init__(self, text: str) -> None:
        self.breaks = [i for i, char in enumerate(text) if char == "\n"]

    def at(self, pos: int) -> int:
        return bisect.bisect_left(self.breaks, pos) + 1


def _is_space(text: str, pos: int) -> bool:
    return pos < len(text) and text[pos] in _SPACE


def _lex_action(text: str, pos: int, lines: _Lines) -> tuple[list[Token], int, bool]:
    """Tokens of one action from `pos` (just past the left delimiter) to its right delimiter.

    Returns the tokens, the position after the right delimiter, and whether it trims right.
    """
    tokens: list[Token] = []
    spaced = True
    start_line = lines.at(pos)
    while True:
        if pos >= len(text):
            raise GoTemplateError("unclosed action", start_line)
        char = text[pos]
        line = lines.at(pos)
        if char in _SPACE:
            if text.startswith("-}}", pos + 1):
                return tokens, pos + 4, True
            pos += 1
            spaced = True
            continue
        if text.startswith("}}", pos):
            return tokens, pos + 2, False
        if char == '"':
            end = pos + 1
            while end < len(text) and text[end] not in '"\n':
                end += 2 if text[end] == "\\" else 1
            if end >= len(text) or text[end] != '"':
                raise GoTemplateError("unterminated quoted string", line)
            value = _unquote(text[pos + 1 : end], line)
            tokens.append(Token("string", text[pos : end + 1], line, spaced, value))
            pos = end + 1
        elif char == "`":
            end = text.find("`", pos + 1)
            if end < 0:
                raise GoTemplateError("unterminated raw quoted string", line)
            tokens.append(Token("string", text[pos : end + 1], line, spaced, text[pos + 1 : end]))
            pos = end + 1
        elif char == "'":
            match = _CHAR.match(text, pos)
            value = _unquote(match.group(1), line) if match else ""
            if match is None or len(value) != 1:
                raise GoTemplateError("malformed character constant", line)
            tokens.append(Token("number", match.group(0), line, spaced, ord(value)))
            pos = match.end()
        elif char == ".":
            match = _IDENT.match(text, pos + 1)
            if match is None:
                tokens.append(Token("dot", ".", line, spaced))
                pos += 1
            else:
                tokens.append(Token("field", match.group(0), line, spaced))
                pos = match.end()
        elif char == "$":
            match = _IDENT.match(text, pos + 1)
            name = "$" + (match.group(0) if match else "")
            tokens.append(Token("var", name, line, spaced))
            pos += len(name)
        elif char in "()|,":
            tokens.append(Token(char, char, line, spaced))
            pos += 1
        elif text.startswith(":=", pos):
            tokens.append(Token(":=", ":=", line, spaced))
            pos += 2
        elif char == "=":
            tokens.append(Token("=", "=", line, spaced))
            pos += 1
        elif (match := _NUMBER.match(text, pos)) is not None:
            number = _number(match.group(0), line)
            tokens.append(Token("number", match.group(0), line, spaced, number))
            pos = match.end()
        elif (match := _IDENT.match(text, pos)) is not None:
            tokens.append(Token("ident", match.group(0), line, spaced))
            pos = match.end()
        else:
            raise GoTemplateError(f"unexpected {char!r} in action", line)
        spaced = False


def lex(text: str) -> list[Chunk]:
    """Split text into raw text and actions, applying `{{-`/`-}}` trimming and dropping comments."""
    lines = _Lines(text)
    chunks: list[Chunk] = []
    pos = 0
    trim_next = False
    while pos < len(text):
        start = text.find("{{", pos)
        end = len(text) if start < 0 else start
        if trim_next:
            while pos < end and text[pos] in _SPACE:
                pos += 1
        trim_left = start >= 0 and text[start + 2 : start + 3] == "-" and _is_space(text, start + 3)
        raw_end = end
        if trim_left:
            while raw_end > pos and text[raw_end - 1] in _SPACE:
                raw_end -= 1
        if raw_end > pos:
            chunks.append(Chunk(lines.at(pos), text=text[pos:raw_end]))
        if start < 0:
            break
        inner = start + (4 if trim_left else 2)
        if text.startswith("/*", inner):
            close = text.find("*/", inner + 2)
            if close < 0:
                raise GoTemplateError("unclosed comment", lines.at(start))
            after = close + 2
            if text.startswith("}}", after):
                pos, trim_next = after + 2, False
            elif text.startswith(" -}}", after):
                pos, trim_next = after + 4, True
            else:
                raise GoTemplateError("comment ends before closing delimiter", lines.at(after))
            continue
        tokens, pos, trim_next = _lex_action(text, inner, lines)
        chunks.append(Chunk(lines.at(start), tokens=tokens))
    return chunks


# ---------------------------------------------------------------- parse tree


@dataclass
class Node:
    line: int


@dataclass
class Text(Node):
    text: str


@dataclass
class Literal(Node):
    value: Any


@dataclass
class Dot(Node):
    pass


@dataclass
class FieldRef(Node):
    """`.a.b` against dot, `$x.a.b` against a variable, or `(pipe).a` against a result."""

    base: Node | None  # None: dot
    names: tuple[str, ...]


@dataclass
class Variable(Node):
    name: str


@dataclass
class Function(Node):
    name: str


@dataclass
class Command(Node):
    args: list[Node]


@dataclass
class Pipeline(Node):
    decls: list[str]
    assign: bool  # `=` instead of `:=`
    commands: list[Command]


@dataclass
class Action(Node):
    pipe: Pipeline


@dataclass
class Branch(Node):
    kind: str  # if / range / with
    pipe: Pipeline
    body: list[Node]
    otherwise: list[Node] | None


class _Parser:
    """Recursive descent over chunks; checks functions and variables as Go's parser does."""

    def __init__(self, chunks: list[Chunk], functions: Mapping[str, object]) -> None:
        self.chunks = chunks
        self.index = 0
        self.functions = functions
        self.scopes: list[list[str]] = [["$"]]
        self.depth = 0

    def parse(self) -> list[Node]:
        body, stop = self.list_until(())
        if stop is not None:
            raise GoTemplateError(f"unexpected {{{{{stop[0].value}}}}}", stop[0].line)
        return body

    def list_until(self, stops: tuple[str, ...]) -> tuple[list[Node], list[Token] | None]:
        nodes: list[Node] = []
        while self.index < len(self.chunks):
            chunk = self.chunks[self.index]
            self.index += 1
            if chunk.text is not None:
                nodes.append(Text(chunk.line, chunk.text))
                continue
            tokens = chunk.tokens
            if not tokens:
                raise GoTemplateError("missing value for command", chunk.line)
            head = tokens[0]
            if head.kind == "ident" and head.value in ("end", "else"):
                if head.value not in stops:
                    raise GoTemplateError(f"unexpected {{{{{head.value}}}}}", head.line)
                return nodes, tokens
            if head.kind == "ident" and head.value in ("if", "range", "with"):
                nodes.append(self.branch(head.value, tokens[1:], head.line))
            elif head.kind == "ident" and head.value in (
                "define",
                "template",
                "block",
                "break",
                "continue",
            ):
                raise GoTemplateError(f"{{{{{head.value}}}}} is not supported", head.line)
            else:
                nodes.append(Action(chunk.line, self.pipeline(tokens, chunk.line, "command")))
        return nodes, None

    def branch(self, kind: str, tokens: list[Token], line: int) -> Branch:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise GoTemplateError("control structures nested too deeply", line)
        self.scopes.append([])
        pipe = self.pipeline(tokens, line, kind)
        body, stop = self.list_until(("end", "else"))
        otherwise: list[Node] | None = None
        if stop is not None and stop[0].value == "else":
            rest = stop[1:]
            if rest and rest[0].kind == "ident" and rest[0].value in ("if", "with"):
                # `else if` is an `if` inside the else branch that shares this `end`.
                otherwise = [self.branch(rest[0].value, rest[1:], rest[0].line)]
                stop = None
            elif rest:
                raise GoTemplateError("unexpected tokens after else", rest[0].line)
            else:
                otherwise, stop = self.list_until(("end",))
                if stop is None:
                    raise GoTemplateError(
                        f"unexpected EOF: {{{{{kind}}}}} without {{{{end}}}}", line
                    )
        elif stop is None:
            raise GoTemplateError(f"unexpected EOF: {{{{{kind}}}}} without {{{{end}}}}", line)
        if stop is not None and len(stop) > 1:
            raise GoTemplateError("unexpected tokens after end", stop[1].line)
        self.scopes.pop()
        self.depth -= 1
        return Branch(line, kind, pipe, body, otherwise)

    def pipeline(self, tokens: list[Token], line: int, context: str) -> Pipeline:
        pos = 0
        decls: list[str] = []
        assign = False
        if tokens and tokens[0].kind == "var":
            if len(tokens) > 1 and tokens[1].kind in (":=", "="):
                decls, assign, pos = [tokens[0].value], tokens[1].kind == "=", 2
            elif (
                len(tokens) > 3
                and tokens[1].kind == ","
                and tokens[2].kind == "var"
                and tokens[3].kind in (":=", "=")
            ):
                if context != "range":
                    raise GoTemplateError("too many declarations in command", line)
                decls, assign, pos = [tokens[0].value, tokens[2].value], tokens[3].kind == "=", 4
        if assign:
            for name in decls:
                self.check_var(name, line)
        commands: list[Command] = []
        stream = tokens[pos:]
        index = 0
        while True:
            command, index = self.command(stream, index, line)
            commands.append(command)
            if index >= len(stream):
                break
            if stream[index].kind != "|":
                raise GoTemplateError(f"unexpected {stream[index].value!r} in {context}", line)
            index += 1
        if not assign:
            self.scopes[-1].extend(decls)
        return Pipeline(line, decls, assign, commands)

    def command(self, tokens: list[Token], index: int, line: int) -> tuple[Command, int]:
        args: list[Node] = []
        while index < len(tokens) and tokens[index].kind not in ("|", ")"):
            if args and not tokens[index].spaced and tokens[index].kind != "(":
                raise GoTemplateError(f"missing space before {tokens[index].value!r}", line)
            operand, index = self.operand(tokens, index, line)
            args.append(operand)
        if not args:
            raise GoTemplateError("missing value for command", line)
        return Command(line, args), index

    def operand(self, tokens: list[Token], index: int, line: int) -> tuple[Node, int]:
        tok = tokens[index]
        node: Node
        index += 1
        if tok.kind == "field":
            node = FieldRef(tok.line, None, (tok.value,))
        elif tok.kind == "dot":
            node = Dot(tok.line)
        elif tok.kind == "var":
            self.check_var(tok.value, tok.line)
            node = Variable(tok.line, tok.value)
        elif tok.kind in ("string", "number"):
            node = Literal(tok.line, tok.literal)
        elif tok.kind == "ident":
            constants = {"true": True, "false": False, "nil": None}
            if tok.value in constants:
                node = Literal(tok.line, constants[tok.value])
            elif tok.value in self.functions or tok.value in LAZY:
                node = Function(tok.line, tok.value)
            elif tok.value in ("if", "range", "with", "else", "end"):
                raise GoTemplateError(f"unexpected {tok.value!r} in operand", tok.line)
            else:
                raise GoTemplateError(f'function "{tok.value}" not defined', tok.line)
        elif tok.kind == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise GoTemplateError("parentheses nested too deeply", tok.line)
            end = self.matching_paren(tokens, index - 1, line)
            node = self.pipeline(tokens[index:end], line, "parenthesized pipeline")
            self.depth -= 1
            index = end + 1
        else:
            raise GoTemplateError(f"unexpected {tok.value!r} in operand", tok.line)
        names: list[str] = []
        while index < len(tokens) and tokens[index].kind == "field" and not tokens[index].spaced:
            names.append(tokens[index].value)
            index += 1
        if isinstance(node, FieldRef):
            node = FieldRef(node.line, None, node.names + tuple(names))
        elif names:
            if isinstance(node, Literal | Function | Dot):
                raise GoTemplateError(f"unexpected . after term {tok.value!r}", tok.line)
            node = FieldRef(node.line, node, tuple(names))
        return node, index

    @staticmethod
    def matching_paren(tokens: list[Token], start: int, line: int) -> int:
        depth = 0
        for position in range(start, len(tokens)):
            kind = tokens[position].kind
            depth += kind == "("
            depth -= kind == ")"
            if depth == 0:
                return position
        raise GoTemplateError("unclosed left paren", line)

    def check_var(self, name: str, line: int) -> None:
        if not any(name in scope for scope in self.scopes):
            raise GoTemplateError(f'undefined variable "{name}"', line)


def parse(text: str) -> list[Node]:
    """Parse once so syntax errors surface before any data is known."""
    return _Parser(lex(text), FUNCTIONS).parse()


# ---------------------------------------------------------------- execution


class _Executor:
    def __init__(self, root: Any, limit: int, probe: bool) -> None:
        self.vars: list[tuple[str, Any]] = [("$", root)]
        self.out: list[str] = []
        self.size = 0
        self.limit = limit
        self.probe = probe
        self.steps = 0

    def write(self, text: str, line: int) -> None:
        self.size += len(text.encode("utf-8", "surrogatepass"))
        if self.size > self.limit:
            raise OutputTooLarge(f"rendered template exceeds {self.limit // 1024} KiB", line)
        self.out.append(text)

    def walk(self, nodes: Sequence[Node], dot: Any) -> None:
        for node in nodes:
            if isinstance(node, Text):
                self.write(node.text, node.line)
            elif isinstance(node, Action):
                value = self.pipeline(node.pipe, dot)
                if not node.pipe.decls:
                    self.write(go_print(value), node.line)
            elif isinstance(node, Branch):
                self.branch(node, dot)

    def branch(self, node: Branch, dot: Any) -> None:
        mark = len(self.vars)
        if node.kind == "range":
            self.range(node, dot)
        else:
            value = self.pipeline(node.pipe, dot, declare=True)
            if truth(value):
                self.walk(node.body, value if node.kind == "with" else dot)
            elif node.otherwise is not None:
                self.walk(node.otherwise, dot)
        del self.vars[mark:]

    def range(self, node: Branch, dot: Any) -> None:
        value = self.pipeline(node.pipe, dot, declare=False)
        items: Iterator[tuple[Any, Any]]
        if isinstance(value, Probe):
            items = iter(())
        elif isinstance(value, Mapping):
            items = ((key, value[key]) for key in sorted(value, key=str))
        elif isinstance(value, list | tuple):
            items = enumerate(value)
        elif value is None:
            items = iter(())
        elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            items = ((i, i) for i in range(value))
        else:
            raise GoTemplateError(f"range can't iterate over {go_print(value)}", node.line)
        ran = False
        mark = len(self.vars)
        for key, element in items:
            ran = True
            self.step(node.line)
            del self.vars[mark:]
            decls = node.pipe.decls
            if len(decls) == 1:
                self.bind(decls[0], element, node.pipe.assign)
            elif len(decls) == 2:
                self.bind(decls[0], key, node.pipe.assign)
                self.bind(decls[1], element, node.pipe.assign)
            inner = len(self.vars)
            self.walk(node.body, element)
            del self.vars[inner:]
        if not ran and node.otherwise is not None:
            self.walk(node.otherwise, dot)

    def step(self, line: int) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise GoTemplateError("template takes too many steps to execute", line)

    def bind(self, name: str, value: Any, assign: bool) -> None:
        if assign:
            for position in range(len(self.vars) - 1, -1, -1):
                if self.vars[position][0] == name:
                    self.vars[position] = (name, value)
                    return
        self.vars.append((name, value))

    def lookup(self, name: str, line: int) -> Any:
        for var_name, value in reversed(self.vars):
            if var_name == name:
                return value
        raise GoTemplateError(f'undefined variable "{name}"', line)  # pragma: no cover

    def pipeline(self, pipe: Pipeline, dot: Any, declare: bool = True) -> Any:
        value: Any = None
        for position, command in enumerate(pipe.commands):
            final = (value,) if position else ()
            value = self.command(command, dot, final)
        if declare:
            for name in pipe.decls:
                self.bind(name, value, pipe.assign)
        return value

    def command(self, command: Command, dot: Any, final: tuple[Any, ...]) -> Any:
        self.step(command.line)
        head = command.args[0]
        if isinstance(head, Function):
            return self.call(head, command.args[1:], dot, final)
        if len(command.args) > 1 or final:
            raise GoTemplateError(
                f"can't give argument to non-function {describe(head)}", command.line
            )
        if isinstance(head, Literal) and head.value is None:
            raise GoTemplateError("nil is not a command", command.line)
        return self.arg(head, dot)

    def call(self, fn: Function, args: list[Node], dot: Any, final: tuple[Any, ...]) -> Any:
        if fn.name in LAZY:
            if not args and not final:
                raise GoTemplateError(
                    f"wrong number of args for {fn.name}: want at least 1 got 0", fn.line
                )
            result: Any = None
            for node in args:
                result = self.arg(node, dot)
                if truth(result) == (fn.name == "or"):
                    return result
            return final[0] if final else result
        values = [self.arg(node, dot) for node in args] + list(final)
        function: Callable[..., Any] = FUNCTIONS[fn.name]
        try:
            return function(*values)
        except FunctionError as exc:
            raise GoTemplateError(f"error calling {fn.name}: {exc}", fn.line) from None
        except TypeError:
            raise GoTemplateError(
                f"wrong number or type of args for {fn.name}: got {len(values)}", fn.line
            ) from None
        except Exception as exc:  # a function's own failure is the template's error, as in Go
            raise GoTemplateError(f"error calling {fn.name}: {exc}", fn.line) from None

    def arg(self, node: Node, dot: Any) -> Any:
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, Dot):
            return dot
        if isinstance(node, Variable):
            return self.lookup(node.name, node.line)
        if isinstance(node, Function):
            return self.call(node, [], dot, ())
        if isinstance(node, Pipeline):
            mark = len(self.vars)
            value = self.pipeline(node, dot)
            del self.vars[mark:]
            return value
        if isinstance(node, FieldRef):
            base = dot if node.base is None else self.arg(node.base, dot)
            return self.fields(base, node)
        raise GoTemplateError("unexpected node", node.line)  # pragma: no cover

    def fields(self, value: Any, node: FieldRef) -> Any:
        for name in node.names:
            if isinstance(value, Probe):
                value = value.child(name)
            elif isinstance(value, Mapping):
                found = field_of(value, name)
                if found is _MISSING:
                    if self.probe:
                        return Probe.of(describe(node))
                    raise GoTemplateError(
                        f'map has no entry for key "{name}" (at <{describe(node)}>)', node.line
                    )
                value = found
            elif value is None:
                raise GoTemplateError(
                    f'nil value evaluating field "{name}" (at <{describe(node)}>)', node.line
                )
            else:
                raise GoTemplateError(
                    f'can\'t evaluate field "{name}" in a {kind_of(value)} (at <{describe(node)}>)',
                    node.line,
                )
        return value


class _Missing:
    pass


_MISSING: Any = _Missing()


def _fold(name: str) -> str:
    return name.replace("_", "").lower()


class FieldMap(dict[str, Any]):
    """A map whose fields resolve Go-style names (`NameServers`) onto JSON keys (`name_servers`)."""

    def fold_lookup(self, name: str) -> Any:
        folded = _fold(name)
        for key, value in self.items():
            if _fold(key) == folded:
                return value
        return _MISSING


def field_of(value: Mapping[Any, Any], name: str) -> Any:
    if name in value:
        return value[name]
    if isinstance(value, FieldMap):
        return value.fold_lookup(name)
    return _MISSING


def kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "list" if isinstance(value, list | tuple) else type(value).__name__


def describe(node: Node) -> str:
    if isinstance(node, FieldRef):
        base = "" if node.base is None else describe(node.base)
        return base + "." + ".".join(node.names)
    if isinstance(node, Variable):
        return node.name
    if isinstance(node, Function):
        return node.name
    if isinstance(node, Dot):
        return "."
    if isinstance(node, Literal):
        return go_quote(node.value) if isinstance(node.value, str) else go_print(node.value)
    return "(...)"


def execute(tree: Sequence[Node], data: Any, *, limit: int, probe: bool = False) -> str:
    """Render a parsed template; `probe` turns missing keys into placeholders instead of errors."""
    executor = _Executor(data, limit, probe)
    try:
        executor.walk(tree, data)
    except RecursionError:
        raise GoTemplateError("template nests too deeply to execute", None) from None
    return "".join(executor.out)


def render(text: str, data: Any, *, limit: int, probe: bool = False) -> str:
    return execute(parse(text), data, limit=limit, probe=probe)
