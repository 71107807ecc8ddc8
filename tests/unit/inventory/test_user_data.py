"""A machine's user-data: text (`userData`) or any bytes (`userDataBase64`), at most 64 KiB as
stored, shown back in the form it can be applied again in."""

from __future__ import annotations

import base64
import gzip
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metalflow.apply.documents import MachineDoc, parse
from metalflow.errors import Invalid
from metalflow.inventory.schemas import MAX_USER_DATA, user_data_fields
from metalflow.inventory.tinkerbell import hardware_view
from tests import manifests

CLOUD_CONFIG = b"#cloud-config\nhostname: web1\nruncmd: [[touch, /root/\xc3\xa9t\xc3\xa9]]\n"
GZIPPED = gzip.compress(CLOUD_CONFIG, mtime=0)


def machine(**user_data: str | None) -> str:
    return manifests.stream(manifests.machine("web1", **user_data))


def hardware(user_data: str) -> str:
    return (
        "apiVersion: tinkerbell.org/v1alpha1\nkind: Hardware\nmetadata: {name: hw1}\n"
        f"spec:\n  userData: {json.dumps(user_data)}\n"
    )


def applied(text: str) -> MachineDoc:
    [doc] = parse(text)
    assert isinstance(doc, MachineDoc)
    return doc


def refused(text: str) -> Invalid:
    with pytest.raises(Invalid) as info:
        parse(text)
    return info.value


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_text_is_stored_as_its_utf8_bytes() -> None:
    spec = applied(machine(userData=CLOUD_CONFIG.decode())).spec
    assert spec.user_data_bytes() == CLOUD_CONFIG
    assert applied(machine()).spec.user_data_bytes() is None
    assert applied(machine(userData="")).spec.user_data_bytes() == b""


def test_base64_carries_any_bytes_exactly() -> None:
    spec = applied(machine(userDataBase64=b64(GZIPPED))).spec
    assert spec.user_data_bytes() == GZIPPED
    assert gzip.decompress(spec.user_data_bytes() or b"") == CLOUD_CONFIG


def test_base64_wrapped_as_the_base64_command_writes_it() -> None:
    encoded = b64(GZIPPED * 3)
    lines = [encoded[start : start + 76] for start in range(0, len(encoded), 76)]
    assert len(lines) > 1
    text = (
        "apiVersion: metalflow/v1\nkind: Machine\nmetadata: {name: web1}\nspec:\n"
        "  userDataBase64: |\n" + "".join(f"    {line}\n" for line in lines)
    )
    assert applied(text).spec.user_data_bytes() == GZIPPED * 3


def test_text_sent_as_base64_is_the_same_declaration_as_text() -> None:
    as_text = applied(machine(userData=CLOUD_CONFIG.decode())).spec
    as_base64 = applied(machine(userDataBase64=b64(CLOUD_CONFIG))).spec
    assert as_base64.user_data_bytes() == CLOUD_CONFIG
    assert as_base64.fingerprint() == as_text.fingerprint()


def test_both_forms_at_once_name_both_fields() -> None:
    error = refused(machine(userData="#cloud-config\n", userDataBase64=b64(GZIPPED)))
    assert error.field == "documents[0].spec"
    assert "userData and userDataBase64 are both set; give one" in error.message


def test_a_null_beside_the_other_form_is_not_both() -> None:
    """What the API shows carries both keys, one of them null; it applies as it is."""
    spec = applied(machine(userData=None, userDataBase64=b64(GZIPPED))).spec
    assert spec.user_data_bytes() == GZIPPED


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("H4sI-AAA", "'-' (at offset 4) is not in the base64 alphabet"),
        ("H4sIAAé=", "'é' (at offset 6) is not in the base64 alphabet"),
        ("H4sIAAA", "(Incorrect padding)"),
        ("H4sI=AAA", "padded with = or == at the very end"),
    ],
)
def test_invalid_base64_names_the_field_and_what_is_wrong(value: str, words: str) -> None:
    error = refused(machine(userDataBase64=value))
    assert error.field == "documents[0].spec.userDataBase64"
    assert error.message.startswith(
        "documents[0].spec.userDataBase64: userDataBase64 is not valid base64"
    )
    assert words in error.message
    assert "base64 -w0 FILE" in error.message


def test_text_over_the_limit_counts_bytes_not_characters() -> None:
    text = "é" * (MAX_USER_DATA // 2 + 1)  # fewer characters than the limit, more bytes
    assert len(text) < MAX_USER_DATA
    error = refused(machine(userData=text))
    assert error.field == "documents[0].spec.userData"
    assert f"userData is {MAX_USER_DATA + 2} bytes; the limit is 65536 bytes" in error.message
    assert "gzip it and send the gzip'd bytes base64-encoded as userDataBase64" in error.message


def test_base64_over_the_limit_counts_the_decoded_bytes() -> None:
    error = refused(machine(userDataBase64=b64(b"\xff" * (MAX_USER_DATA + 1))))
    assert error.field == "documents[0].spec.userDataBase64"
    assert "userDataBase64 is 65537 bytes; the limit is 65536 bytes" in error.message
    assert "gzip it" in error.message


def test_exactly_the_limit_is_accepted_in_either_form() -> None:
    text = "#" * MAX_USER_DATA
    assert applied(machine(userData=text)).spec.user_data_bytes() == text.encode()
    data = b"\xff" * MAX_USER_DATA
    assert len(b64(data)) > MAX_USER_DATA  # the limit is on the bytes, not their encoding
    assert applied(machine(userDataBase64=b64(data))).spec.user_data_bytes() == data


def test_text_that_is_not_unicode_is_refused_with_the_way_out() -> None:
    error = refused(machine(userData="#cloud-config\n\ud800"))
    assert error.field == "yaml"
    assert "line 5: found invalid Unicode character escape code" in error.message
    assert "userDataBase64" in error.message


def test_hardware_takes_text_only_and_its_fix_says_how_to_send_bytes() -> None:
    spec = applied(hardware("#cloud-config\n")).spec
    assert spec.user_data_bytes() == b"#cloud-config\n"
    error = refused(hardware("#" * (MAX_USER_DATA + 1)))
    assert error.field == "documents[0].spec.userData"
    assert "userData is 65537 bytes" in error.message
    assert "apply the machine as kind Machine (metalflow/v1)" in error.message
    binary = refused(hardware("").replace("userData: ", f"userDataBase64: {b64(GZIPPED)}\n  x: "))
    assert binary.field == "spec.userDataBase64" and "unknown field" in binary.message


@given(st.binary(max_size=256))
def test_what_is_shown_applies_again_to_the_same_bytes(data: bytes) -> None:
    shown = user_data_fields(data)
    assert len(shown) == 1
    spec = applied(machine(**shown)).spec
    assert spec.user_data_bytes() == data
    assert user_data_fields(spec.user_data_bytes()) == shown


def test_shown_as_text_when_utf8_else_base64() -> None:
    assert user_data_fields(CLOUD_CONFIG) == {"userData": CLOUD_CONFIG.decode()}
    assert user_data_fields(GZIPPED) == {"userDataBase64": b64(GZIPPED)}
    assert user_data_fields(None) == {}


def test_fingerprint_of_text_user_data_is_as_before_binary_existed() -> None:
    """Machines applied before keep re-applying as "unchanged"."""
    fingerprint = applied(machine(userData="#cloud-config\n")).spec.fingerprint()
    assert fingerprint["user_data"] == "#cloud-config\n"
    assert "user_data_base64" not in fingerprint
    binary = applied(machine(userDataBase64=b64(GZIPPED))).spec.fingerprint()
    assert (binary["user_data"], binary["user_data_base64"]) == (None, b64(GZIPPED))


def render(text: str) -> dict[str, object]:
    spec = applied(text).spec
    view = hardware_view(
        name=spec.name,
        project=spec.project,
        labels={},
        spec_fields=spec.fingerprint(),
        original_spec=None,
    )
    return dict(view["spec"])


def test_templates_see_text_as_userdata_and_bytes_as_userdatabase64() -> None:
    assert render(machine(userData="#cloud-config\n"))["userData"] == "#cloud-config\n"
    assert render(machine())["userData"] == ""
    binary = render(machine(userDataBase64=b64(GZIPPED)))
    assert binary["userDataBase64"] == b64(GZIPPED) and "userData" not in binary
