"""Boot and run tokens (docs/agent-protocol.md, "Identity"): formats, signatures, decisions.

An iPXE script is fetched without credentials, so the token it carries must be worth little to
whoever else reads it: a **boot token** names one machine and one start of one workflow, expires
within minutes and is exchanged once, at the agent's first hello, for the **run token** the agent
uses from then on. A run token is valid only while that start of the workflow is the current one
and its boot token the one exchanged last, so it dies when the run ends, when the workflow is
started again and when the machine netboots again and exchanges a newer boot token. The agent
that exchanged a boot token (it proves so with its key) may exchange it again: after a restart,
and after the workflow was resumed or re-run, for the run token of the new start.

Pure: keys, workflow rows and clocks come in as values. Signed as the agent tokens are (HMAC-SHA256
with a purpose-bound key, 192 bits kept). Looked at itsdangerous (TimestampSigner) and JWS/JWT
(PyJWT): both would add a dependency for what one HMAC does, and their encodings are twice as long
on a kernel command line that iPXE and the kernel limit; the fields here are few and fixed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

BOOT_PREFIX = "mfb"
RUN_PREFIX = "mfr"
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NUMBER = re.compile(r"[0-9]{1,15}")
SIGNATURE_BYTES = 24


@dataclass(frozen=True, slots=True)
class BootClaim:
    """What a boot token says: this machine, this start of this workflow, until `expires`."""

    machine_id: str
    workflow_id: str
    start: int
    issued_ms: int
    """When it was made, in milliseconds since the epoch: orders a run's boot tokens and names
    the one exchanged (so a replay is recognised)."""
    expires: int
    """Seconds since the epoch after which a first exchange is refused."""


@dataclass(frozen=True, slots=True)
class RunClaim:
    """What a run token says: the start of the workflow and the boot token it was exchanged for."""

    machine_id: str
    workflow_id: str
    start: int
    issued_ms: int


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What the workflow row holds about its current start."""

    machine_id: str
    active: bool
    start: int
    exchanged_ms: int | None
    """`issued_ms` of the boot token exchanged in this start, if any."""
    agent_key_hash: str | None
    """Hash of the key the exchanging agent sent: the same agent may exchange the same boot
    token again (it restarted, or lost the answer); anyone else may not."""


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str
    waiting: bool = False
    """The agent that exchanged this token asks while its workflow is not running (failed,
    cancelled, done): it may ask again, and is answered once an operator resumes or re-runs."""


Exchange = RunClaim | Refused
"""The run token to hand out, or why not."""


def _sign(key: bytes, fields: tuple[str | int, ...]) -> str:
    message = ":".join(str(field) for field in fields).encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()[:SIGNATURE_BYTES]
    return base64.urlsafe_b64encode(digest).decode()


def _fields(token: str, prefix: str, count: int) -> list[str] | None:
    """The fields between the prefix and the signature, if the shape is right."""
    parts = token.split(".")
    if len(parts) != count + 2 or parts[0] != prefix:
        return None
    fields = parts[1:-1]
    if not (_ID.fullmatch(fields[0]) and _ID.fullmatch(fields[1])):
        return None
    if not all(_NUMBER.fullmatch(number) for number in fields[2:]):
        return None
    return fields


def boot_token(key: bytes, claim: BootClaim) -> str:
    fields = (claim.machine_id, claim.workflow_id, claim.start, claim.issued_ms, claim.expires)
    for identifier in fields[:2]:
        if not _ID.fullmatch(str(identifier)):
            raise ValueError(f"{identifier!r} cannot go into a token: letters, digits, _ - only")
    return ".".join([BOOT_PREFIX, *map(str, fields), _sign(key, (BOOT_PREFIX, *fields))])


def parse_boot_token(key: bytes, token: str) -> BootClaim | None:
    """The claim when the signature holds (expiry is the exchange's decision), else None."""
    fields = _fields(token, BOOT_PREFIX, 5)
    if fields is None:
        return None
    claim = BootClaim(fields[0], fields[1], int(fields[2]), int(fields[3]), int(fields[4]))
    if not hmac.compare_digest(token, boot_token(key, claim)):
        return None
    return claim


def run_token(key: bytes, claim: RunClaim) -> str:
    fields = (claim.machine_id, claim.workflow_id, claim.start, claim.issued_ms)
    return ".".join([RUN_PREFIX, *map(str, fields), _sign(key, (RUN_PREFIX, *fields))])


def parse_run_token(key: bytes, token: str) -> RunClaim | None:
    fields = _fields(token, RUN_PREFIX, 4)
    if fields is None:
        return None
    claim = RunClaim(fields[0], fields[1], int(fields[2]), int(fields[3]))
    if not hmac.compare_digest(token, run_token(key, claim)):
        return None
    return claim


def run_claim(claim: BootClaim) -> RunClaim:
    """The run token a boot token is first exchanged for."""
    return RunClaim(claim.machine_id, claim.workflow_id, claim.start, claim.issued_ms)


def hash_agent_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def exchange(
    claim: BootClaim, record: RunRecord | None, key_hash: str | None, now: float
) -> Exchange:
    """May this boot token be exchanged for a run token now, and for which start?

    A first exchange needs the token unexpired, of the current start and newer than any
    exchanged before. The token exchanged last is accepted again only with the key it was
    exchanged with, in any later start too: the agent that restarted, or that waited through a
    failure for the operator's resume, gets the run token of the workflow's current start.
    """
    if record is None or record.machine_id != claim.machine_id:
        return Refused("the workflow this boot token was made for no longer exists")
    if record.exchanged_ms == claim.issued_ms:
        if key_hash is None or key_hash != record.agent_key_hash:
            return Refused(
                "this boot token was exchanged already, by an agent holding another key (a"
                " replayed token, or an agent that lost its key: netboot the machine again)"
            )
        if not record.active:
            return Refused(
                "the workflow is not running (it ended): ask again after an operator resumes or"
                " re-runs it",
                waiting=True,
            )
        return RunClaim(claim.machine_id, claim.workflow_id, record.start, claim.issued_ms)
    if not record.active:
        return Refused("the workflow run this boot token was made for has ended")
    if record.start != claim.start:
        return Refused(
            f"the workflow was started again since (start {record.start}, the token is of start"
            f" {claim.start}): netboot the machine again for a token of the current run"
        )
    if record.exchanged_ms is not None and claim.issued_ms < record.exchanged_ms:
        return Refused("a newer boot token of this workflow was exchanged already")
    if claim.expires <= now:
        return Refused(
            "the boot token expired (see --boot-token-ttl): netboot the machine again for a"
            " fresh one"
        )
    return run_claim(claim)


def run_valid(claim: RunClaim, record: RunRecord | None) -> bool:
    """A run token holds while its start is current and its boot token the last exchanged."""
    return (
        record is not None
        and record.machine_id == claim.machine_id
        and record.active
        and record.start == claim.start
        and record.exchanged_ms == claim.issued_ms
    )
