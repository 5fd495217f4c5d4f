"""The witness's HTTP face: ``POST /add-checkpoint`` exactly as C2SP tlog-witness says.

Every reply of :meth:`ledger.Witness.add_checkpoint` maps one to one onto a
response (status, body, content type); the reason code travels in the
``Fedgate-Code`` header so clients need not parse bodies. Bodies over
:data:`ledger._witness.MAX_REQUEST_BYTES` are refused with 413 before they are
read whole. ``GET /`` names the witness and its vkey (for humans; clients must
configure the vkey they trust out of band).
"""

from __future__ import annotations

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import ledger
from ledger import MAX_REQUEST_BYTES

__all__ = ["CODE_HEADER", "make_app"]

CODE_HEADER = "Fedgate-Code"


def make_app(witness: ledger.Witness) -> Starlette:
    """A Starlette app serving ``witness``."""

    async def add_checkpoint(request: Request) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > MAX_REQUEST_BYTES:
                return Response(
                    f"request body over {MAX_REQUEST_BYTES} bytes\n",
                    status_code=413,
                    headers={CODE_HEADER: "TOO_LARGE"},
                )
        # The witness fsyncs and holds a file lock: keep that off the event loop.
        reply = await anyio.to_thread.run_sync(witness.add_checkpoint, bytes(body))
        return Response(
            reply.body,
            status_code=reply.status,
            media_type=reply.content_type,
            headers={CODE_HEADER: reply.code},
        )

    async def info(_: Request) -> Response:
        return JSONResponse({"name": witness.name, "vkey": witness.cosigner.vkey})

    return Starlette(
        routes=[
            Route("/add-checkpoint", add_checkpoint, methods=["POST"]),
            Route("/", info, methods=["GET"]),
        ]
    )
