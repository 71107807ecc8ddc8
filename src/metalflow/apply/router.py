"""`POST /api/v1/apply`: YAML in, one line per document out, all-or-nothing."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from metalflow.api.deps import ServicesDep, Writer
from metalflow.apply.documents import parse
from metalflow.apply.service import apply_documents
from metalflow.errors import Invalid

router = APIRouter(tags=["apply"])
MAX_BODY = 8 * 1024 * 1024


class _DryRun(Exception):
    def __init__(self, results: list[dict[str, Any]]) -> None:
        self.results = results


@router.post(
    "/apply",
    openapi_extra={
        "requestBody": {"content": {"application/yaml": {"schema": {"type": "string"}}}}
    },
)
async def apply(
    request: Request, services: ServicesDep, _: Writer, dry_run: bool = False
) -> dict[str, Any]:
    declared = request.headers.get("content-length", "0")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise Invalid(f"the request is {declared} bytes; the limit is {MAX_BODY}", field="body")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise Invalid(f"the request is {len(body)} bytes; the limit is {MAX_BODY}", field="body")
    try:
        text = body.decode()
    except UnicodeDecodeError as exc:
        raise Invalid(f"the YAML is not UTF-8 (byte {exc.start})", field="body") from None
    docs = parse(text)

    def run() -> list[dict[str, Any]]:
        try:
            with services.db.write() as session:
                results = apply_documents(session, docs, services.keyring)
                if dry_run:
                    raise _DryRun(results)
        except _DryRun as done:
            return done.results
        return results

    return {"dry_run": dry_run, "results": await run_in_threadpool(run)}
