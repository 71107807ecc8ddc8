"""Template functions: Go's builtins, the sprig subset templates use, and tink's own
formatPartition and netmaskToPrefixLength.

Current tink registers its own two on top of sprig, so argument order follows sprig
(`contains substr s`, `trimPrefix prefix s`); older tink registered Go's `strings.Contains`
(`contains s substr`) instead. Printing follows Go's `fmt`, so rendered text matches tink's.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import yaml

MAX_WIDTH = 256 * 1024
GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"  # noqa: E501


class FunctionError(ValueError):
    """A function refused its arguments; the executor adds the function name and line."""


class Probe(str):
    """Stands in for data that is not known yet, so `check_template` can render without a machine.

    Field access and indexing on a probe give a longer probe instead of an error. The text is
    lowercase letters, digits and dashes, so it stays valid wherever templates put data: a
    worker, an image reference, a device path, a YAML scalar.
    """

    @classmethod
    def of(cls, path: str) -> Probe:
        return cls("probe-" + _slug(path))

    def child(self, name: str) -> Probe:
        return Probe(f"{self}-{_slug(name)}")

    def item(self, key: Any) -> Probe:
        return Probe(f"{self}-{_slug(go_format(key))}")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


# ---------------------------------------------------------------- printing


def go_float(value: float) -> str:
    """`%v` of a float64 as Go prints it: shortest digits, `1e+06` from a million up."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    sign, digit_tuple, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    exponent += len("".join(map(str, digit_tuple))) - len(digits)
    point = len(digits) + exponent  # position of the decimal point within digits
    exp = point - 1
    prefix = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return prefix + digits + "0" * (point - len(digits))
    return f"{prefix}{digits[:point]}.{digits[point:]}"


def go_format(value: Any) -> str:
    """`%v` of a value nested in a list or map (nil prints as `<nil>`)."""
    if value is None:
        return "<nil>"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_format(item) for item in value) + "]"
    if isinstance(value, Mapping):
        keys = sorted(value, key=str)
        return "map[" + " ".join(f"{go_format(k)}:{go_format(value[k])}" for k in keys) + "]"
    return str(value)


def go_print(value: Any) -> str:
    """What `{{ value }}` writes: as `%v`, but a missing or nil value is `<no value>`."""
    return "<no value>" if value is None else go_format(value)


def go_quote(text: str) -> str:
    """Go's strconv.Quote, so `quote` and `%q` escape exactly as tink does."""
    named = {
        "\a": "\\a",
        "\b": "\\b",
        "\f": "\\f",
        "\n": "\\n",
        "\r": "\\r",
        "\t": "\\t",
        "\v": "\\v",
        "\\": "\\\\",
        '"': '\\"',
    }
    out = ['"']
    for char in text:
        if char in named:
            out.append(named[char])
        elif char == " " or (char.isprintable() and not 0xD800 <= ord(char) <= 0xDFFF):
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    out.append('"')
    return "".join(out)


def truth(value: Any) -> bool:
    """Go's template truth: zero values and empty collections are false."""
    if value is None:
        return False
    if isinstance(value, bool | int | float | str | list | tuple | Mapping):
        return bool(value)
    return True


def _go_type(value: Any) -> str:
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "[]interface {}"
    return "map[string]interface {}"


def plain(value: Any) -> Any:
    """JSON-shaped copy for toYaml/toJson (probes become strings, map views become dicts)."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


# ---------------------------------------------------------------- printf


def _pad(text: str, width: int | None, left: bool, zero: bool = False) -> str:
    if width is None or len(text) >= width:
        return text
    if left:
        return text.ljust(width)
    if zero:
        sign = text[0] if text[:1] in "+-" else ""
        return sign + text[len(sign) :].rjust(width - len(sign), "0")
    return text.rjust(width)


def _bad(verb: str, value: Any) -> str:
    return f"%!{verb}({_go_type(value)}={go_format(value)})"


def _format_one(verb: str, flags: str, width: int | None, prec: int | None, value: Any) -> str:
    left, plus, zero = "-" in flags, "+" in flags, "0" in flags and "-" not in flags
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if verb == "d" and is_int:
        return _pad(f"{value:+d}" if plus else str(value), width, left, zero)
    if verb in "xXob" and is_int:
        text = format(abs(value), verb)
        if "#" in flags and verb in "xX":
            text = ("0x" if verb == "x" else "0X") + text
        return _pad(("-" if value < 0 else "+" if plus else "") + text, width, left, zero)
    if verb in "xX" and isinstance(value, str):
        text = value.encode("utf-8", "surrogatepass").hex()
        return _pad(text.upper() if verb == "X" else text, width, left)
    if verb == "c" and is_int and 0 <= value <= 0x10FFFF:
        return _pad(chr(value), width, left)
    if verb in "feEgG" and isinstance(value, int | float) and not isinstance(value, bool):
        if verb in "gG" and prec is None:
            text = go_float(float(value))
        else:
            text = format(
                float(value), ("+" if plus else "") + f".{6 if prec is None else prec}" + verb
            )
        return _pad(text, width, left, zero)
    if verb == "t" and isinstance(value, bool):
        return _pad(go_format(value), width, left)
    if verb == "q" and isinstance(value, str):
        return _pad(go_quote(value), width, left)
    if verb == "q" and is_int and 0 <= value <= 0x10FFFF:
        return _pad("'" + go_quote(chr(value))[1:-1].replace("'", "\\'") + "'", width, left)
    if verb == "s" and not isinstance(value, bool | int | float):
        text = go_format(value)
        return _pad(text if prec is None else text[:prec], width, left)
    if verb == "v":
        text = go_format(value)
        return _pad(text, width, left, zero and isinstance(value, int | float))
    return _bad(verb, value)


def printf(fmt: str, *args: Any) -> str:
    _need_str(fmt, "format")
    out: list[str] = []
    used = 0
    pos = 0
    while pos < len(fmt):
        char = fmt[pos]
        if char != "%":
            out.append(char)
            pos += 1
            continue
        pos += 1
        flags = ""
        while pos < len(fmt) and fmt[pos] in "+-# 0":
            flags += fmt[pos]
            pos += 1
        width_start = pos
        while pos < len(fmt) and fmt[pos].isdigit():
            pos += 1
        width = int(fmt[width_start:pos]) if pos > width_start else None
        prec: int | None = None
        if pos < len(fmt) and fmt[pos] == ".":
            pos += 1
            prec_start = pos
            while pos < len(fmt) and fmt[pos].isdigit():
                pos += 1
            prec = int(fmt[prec_start:pos] or "0")
        if (width or 0) > MAX_WIDTH or (prec or 0) > MAX_WIDTH:
            raise FunctionError("width or precision too large")
        if pos >= len(fmt):
            out.append("%!(NOVERB)")
            break
        verb = fmt[pos]
        pos += 1
        if verb == "%":
            out.append("%")
        elif used >= len(args):
            out.append(f"%!{verb}(MISSING)")
        else:
            out.append(_format_one(verb, flags, width, prec, args[used]))
            used += 1
    if used < len(args):
        extra = ", ".join(f"{_go_type(a)}={go_format(a)}" for a in args[used:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def go_sprint(*args: Any) -> str:
    """fmt.Sprint: a space goes between operands when neither side is a string."""
    out: list[str] = []
    for position, arg in enumerate(args):
        if position and not isinstance(arg, str) and not isinstance(args[position - 1], str):
            out.append(" ")
        out.append(go_format(arg))
    return "".join(out)


def go_sprintln(*args: Any) -> str:
    return " ".join(go_format(arg) for arg in args) + "\n"


# ---------------------------------------------------------------- builtins


def _need_str(value: Any, what: str = "argument") -> str:
    if not isinstance(value, str):
        raise FunctionError(f"{what} must be a string, not {_go_type(value)}")
    return value


def _need_int(value: Any, what: str = "argument") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FunctionError(f"{what} must be an integer, not {_go_type(value)}")
    return value


def index(item: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(item, Probe):
            item = item.item(key)
        elif isinstance(item, Mapping):
            item = item.get(key)
        elif isinstance(item, list | tuple | str):
            position = _need_int(key, "index")
            data: Any = item.encode("utf-8", "surrogatepass") if isinstance(item, str) else item
            if not 0 <= position < len(data):
                raise FunctionError(f"index out of range: {position}")
            item = data[position]
        elif item is None:
            raise FunctionError("index of untyped nil")
        else:
            raise FunctionError(f"can't index item of type {_go_type(item)}")
    return item


def length(item: Any) -> int:
    if isinstance(item, str):
        return len(item.encode("utf-8", "surrogatepass"))
    if isinstance(item, list | tuple | Mapping):
        return len(item)
    raise FunctionError(f"len of type {_go_type(item)}")


def _kind(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    raise FunctionError(f"non-comparable type {_go_type(value)}")


def eq(first: Any, *others: Any) -> bool:
    if not others:
        raise FunctionError("missing argument for comparison")
    kind = _kind(first)
    for other in others:
        other_kind = _kind(other)
        if kind != other_kind and "nil" not in (kind, other_kind):
            raise FunctionError("incompatible types for comparison")
        if kind == other_kind and first == other:
            return True
    return False


def ne(first: Any, second: Any) -> bool:
    return not eq(first, second)


def _ordered(first: Any, second: Any) -> tuple[Any, Any]:
    kind = _kind(first)
    if kind not in ("number", "string"):
        raise FunctionError(f"invalid type for comparison: {_go_type(first)}")
    if kind != _kind(second):
        raise FunctionError("incompatible types for comparison")
    return first, second


def lt(first: Any, second: Any) -> bool:
    a, b = _ordered(first, second)
    return bool(a < b)


def le(first: Any, second: Any) -> bool:
    a, b = _ordered(first, second)
    return bool(a <= b)


def gt(first: Any, second: Any) -> bool:
    a, b = _ordered(first, second)
    return bool(a > b)


def ge(first: Any, second: Any) -> bool:
    a, b = _ordered(first, second)
    return bool(a >= b)


def not_(value: Any) -> bool:
    return not truth(value)


def format_partition(device: Any, partition: Any) -> str:
    """`/dev/sda` 1 → `/dev/sda1`; names ending in a digit (nvme, mmcblk, md, loop) get `p`;
    `/dev/disk/by-*` links get `-partN`, as current tink does."""
    dev = _need_str(device, "device")
    number = _need_int(partition, "partition")
    if dev.startswith("/dev/disk/"):
        return f"{dev}-part{number}"
    if dev[-1:].isdigit():
        return f"{dev}p{number}"
    return f"{dev}{number}"


def netmask_to_prefix_length(netmask: Any) -> str:
    """`255.255.255.0` → `24`, as tink's helper for writing netplan from Hardware data."""
    text = _need_str(netmask, "netmask")
    try:
        return str(ipaddress.IPv4Network(f"0.0.0.0/{text}").prefixlen)
    except ValueError:
        raise FunctionError(f"{text!r} is not a netmask") from None


# ---------------------------------------------------------------- sprig subset


def default(fallback: Any, *given: Any) -> Any:
    return fallback if not given or not_(given[0]) else given[0]


def strval(value: Any) -> str:
    return go_format(value)


def quote(*values: Any) -> str:
    return " ".join(go_quote(strval(v)) for v in values if v is not None)


def squote(*values: Any) -> str:
    return " ".join(f"'{strval(v)}'" for v in values if v is not None)


def lower(text: Any) -> str:
    return _need_str(text).lower()


def upper(text: Any) -> str:
    return _need_str(text).upper()


def trim(text: Any) -> str:
    return _need_str(text).strip(GO_SPACE)


def trim_prefix(prefix: Any, text: Any) -> str:
    return _need_str(text).removeprefix(_need_str(prefix))


def trim_suffix(suffix: Any, text: Any) -> str:
    return _need_str(text).removesuffix(_need_str(suffix))


def replace(old: Any, new: Any, text: Any) -> str:
    result = _need_str(text).replace(_need_str(old), _need_str(new))
    if len(result) > MAX_WIDTH * 4:
        raise FunctionError("result too large")
    return result


def _strslice(value: Any) -> list[str]:
    if isinstance(value, list | tuple):
        return [strval(item) for item in value if item is not None]
    return [] if value is None else [strval(value)]


def join(separator: Any, values: Any) -> str:
    return _need_str(separator).join(_strslice(values))


def split_list(separator: Any, text: Any) -> list[str]:
    sep, value = _need_str(separator), _need_str(text)
    return list(value) if sep == "" else value.split(sep)


def split(separator: Any, text: Any) -> dict[str, str]:
    return {f"_{i}": part for i, part in enumerate(split_list(separator, text))}


def to_yaml(value: Any) -> str:
    text = yaml.safe_dump(plain(value), allow_unicode=True, default_flow_style=False)
    return text.removesuffix("\n...\n").removesuffix("\n")


def to_json(value: Any) -> str:
    try:
        text = json.dumps(
            plain(value), ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
        )
    except ValueError:
        return ""
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text


def b64enc(text: Any) -> str:
    return base64.b64encode(_need_str(text).encode("utf-8", "surrogatepass")).decode("ascii")


def b64dec(text: Any) -> str:
    try:
        raw = base64.b64decode(_need_str(text).encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise FunctionError("illegal base64 data") from None
    return raw.decode("utf-8", "replace")


def indent(spaces: Any, text: Any) -> str:
    count = _need_int(spaces, "indent")
    if not 0 <= count <= 1024:
        raise FunctionError("indent must be between 0 and 1024")
    pad = " " * count
    return pad + _need_str(text).replace("\n", "\n" + pad)


def nindent(spaces: Any, text: Any) -> str:
    return "\n" + indent(spaces, text)


def contains(needle: Any, text: Any) -> bool:
    return _need_str(needle) in _need_str(text)


def has_prefix(prefix: Any, text: Any) -> bool:
    return _need_str(text).startswith(_need_str(prefix))


def has_suffix(suffix: Any, text: Any) -> bool:
    return _need_str(text).endswith(_need_str(suffix))


def first(values: Any) -> Any:
    if values is None:
        return None
    if isinstance(values, Probe):
        return values.item(0)
    if not isinstance(values, list | tuple):
        raise FunctionError(f"cannot find first on type {_go_type(values)}")
    return values[0] if values else None


def last(values: Any) -> Any:
    if values is None:
        return None
    if isinstance(values, Probe):
        return values.item("last")
    if not isinstance(values, list | tuple):
        raise FunctionError(f"cannot find last on type {_go_type(values)}")
    return values[-1] if values else None


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "index": index,
    "len": length,
    "printf": printf,
    "print": go_sprint,
    "println": go_sprintln,
    "eq": eq,
    "ne": ne,
    "lt": lt,
    "le": le,
    "gt": gt,
    "ge": ge,
    "not": not_,
    "formatPartition": format_partition,
    "netmaskToPrefixLength": netmask_to_prefix_length,
    "default": default,
    "empty": not_,
    "quote": quote,
    "squote": squote,
    "lower": lower,
    "upper": upper,
    "trim": trim,
    "trimPrefix": trim_prefix,
    "trimSuffix": trim_suffix,
    "replace": replace,
    "join": join,
    "split": split,
    "splitList": split_list,
    "toYaml": to_yaml,
    "toJson": to_json,
    "b64enc": b64enc,
    "b64dec": b64dec,
    "indent": indent,
    "nindent": nindent,
    "contains": contains,
    "hasPrefix": has_prefix,
    "hasSuffix": has_suffix,
    "first": first,
    "last": last,
}
