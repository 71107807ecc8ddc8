"""`POST /api/v1/apply`: YAML in, one line per document out, all-or-nothing."""

from __future__ import annotations

from anyio import CapacityLimiter, to_thread
from anyio.lowlevel import RunVar
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from metalflow.apply.documents import Document, parse
from metalflow.apply.schemas import ApplyAnswer, ApplyResult
from metalflow.apply.service import apply_documents
from metalflow.cloud.catalogue import metadata_url
from metalflow.errors import Invalid
from metalflow.services import ServicesDep, Writer

router = APIRouter(tags=["apply"])
MAX_BODY = 8 * 1024 * 1024
PARSING_THREADS = 2
"""Applies parsed at once: a flood of applies leaves the other worker threads to agents, boot
and the database."""
_parsing: RunVar[CapacityLimiter] = RunVar("apply_parsing")


class _DryRun(Exception):
    def __init__(self, results: list[ApplyResult]) -> None:
        self.results = results


def _parsing_limiter() -> CapacityLimiter:
    """One limiter per event loop, as anyio keeps its default thread limiter."""
    try:
        return _parsing.get()
    except LookupError:
        limiter = CapacityLimiter(PARSING_THREADS)
        _parsing.set(limiter)
        return limiter


def _decode_and_parse(body: bytes) -> list[Document]:
    try:
        text = body.decode()
    except UnicodeDecodeError as exc:
        raise Invalid(f"the YAML is not UTF-8 (byte {exc.start})", field="body") from None
    return parse(text)


@router.post(
    "/apply",
    openapi_extra={
        "requestBody": {"content": {"application/yaml": {"schema": {"type": "string"}}}}
    },
)
async def apply(
    request: Request, services: ServicesDep, _: Writer, dry_run: bool = False
) -> ApplyAnswer:
    """Decoding, parsing and validation run in a worker thread, so the event loop goes on
    answering boot, agent and metadata requests while a large stream is read."""
    declared = request.headers.get("content-length", "0")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise Invalid(f"the request is {declared} bytes; the limit is {MAX_BODY}", field="body")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise Invalid(f"the request is {len(body)} bytes; the limit is {MAX_BODY}", field="body")
    docs = await to_thread.run_sync(_decode_and_parse, body, limiter=_parsing_limiter())
    metadata = metadata_url(services.settings, request.headers.get("host"))

    def run() -> list[ApplyResult]:
        try:
            with services.db.write() as session:
                results = apply_documents(session, docs, services.keyring, metadata_url=metadata)
                if dry_run:
                    raise _DryRun(results)
        except _DryRun as done:
            return done.results
        return results

    return ApplyAnswer(dry_run=dry_run, results=await run_in_threadpool(run))
