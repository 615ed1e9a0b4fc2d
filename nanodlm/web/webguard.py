"""The web demo's door: which requests ``nanodlm serve`` answers at all, and how it reads a request body.

- Host allow-list: a page on another site can make the browser talk to 127.0.0.1 (DNS rebinding gives it a name
  that resolves here); the ``Host`` header still carries that foreign name, so only ``localhost``, the loopback
  addresses, the bound address and ``--allowed_hosts`` are answered (403 otherwise).
- Same origin only: a cross-site ``fetch`` or form post carries the page's ``Origin``; one that is not this server
  (another host or port, or ``null``: a sandboxed frame, a ``file://`` page) is refused (403).
- JSON only: ``POST /api/generate`` needs ``Content-Type: application/json`` (415 otherwise). A ``text/plain`` or
  form post is a "simple request" that browsers send cross-site without a CORS preflight; JSON is not.
- The body is read with a size cap (413), a time limit for slow clients (408) and a quiet end when the client goes
  away mid-body (no traceback in the log); a connection whose request line and headers have not all arrived
  within ``HEADER_TIMEOUT_S`` is closed (``header_timeout_protocol``: uvicorn itself never times them out).

Pure ASGI (no Starlette import here) so the checks run before any route, static file or body read.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

LOOPBACK = ("localhost", "127.0.0.1", "::1")
HEADER_TIMEOUT_S = 10.0  # seconds a new connection has to send its request line and headers
WILDCARD = ("0.0.0.0", "::", "")  # bound to every interface: only the names given by --allowed_hosts are added


class BodyError(Exception):
    """A request body that cannot be read: ``status`` and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def allowed_hosts(bound: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """Host names (lower case, no port, IPv6 without brackets) this server answers to."""
    names = {*LOOPBACK, *(h.strip().lower().strip("[]") for h in extra if h.strip())}
    if bound.lower().strip("[]") not in WILDCARD:
        names.add(bound.lower().strip("[]"))
    return frozenset(names)


def split_host(value: str, default_port: int = 80) -> tuple[str, int] | None:
    """``Host`` header -> (name, port): ``[::1]:8000`` -> (``::1``, 8000); None when it does not parse."""
    try:
        parts = urlsplit("//" + value.strip())
        name, port = parts.hostname, parts.port  # .port raises ValueError on a bad or out-of-range port
    except ValueError:
        return None
    return (name.lower(), port or default_port) if name else None


def refusal(headers: dict[str, str], allowed: frozenset[str]) -> str | None:
    """Why a request with these (lower-case) headers is refused, or None to serve it: the Host must be an allowed
    name, and an Origin, when sent, this very server (same name and port)."""
    host = split_host(headers.get("host", ""))
    if host is None or host[0] not in allowed:
        return (f"Host {headers.get('host', '')!r} is not served here (DNS rebinding guard): open the page at "
                "http://localhost:PORT/, or start nanodlm serve with --allowed_hosts=NAME")
    origin = headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        same = parts.scheme in ("http", "https") and split_host(
            parts.netloc, 443 if parts.scheme == "https" else 80) == host
        if not same:
            return (f"requests from the page at {origin!r} are refused (cross-origin guard): only this server's "
                    "own page may use it")
    return None


def is_json(content_type: str | None) -> bool:
    """``application/json`` (any parameters, e.g. ``; charset=utf-8``)."""
    return (content_type or "").split(";", 1)[0].strip().lower() == "application/json"


Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def send_json(send: Send, status: int, obj: dict[str, Any]) -> None:
    body = json.dumps(obj).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: refuse a foreign Host or Origin (403) before the application sees the request."""

    def __init__(self, app: Callable[..., Awaitable[None]], allowed: frozenset[str]) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            why = refusal(headers, self.allowed)
            if why is not None:
                await send_json(send, 403, {"error": why})
                return
        await self.app(scope, receive, send)


async def read_body(chunks: Callable[[], Any], max_bytes: int, timeout_s: float) -> bytes:
    """The whole body from ``chunks()`` (Starlette's ``request.stream``): BodyError 413 when over ``max_bytes``,
    408 when it takes longer than ``timeout_s`` (a slow or stalled client), 400 when the client goes away."""
    from starlette.requests import ClientDisconnect

    async def collect() -> bytes:
        body = b""
        async for chunk in chunks():
            body += chunk
            if len(body) > max_bytes:
                raise BodyError(413, f"the request body is over {max_bytes} bytes")
        return body

    try:
        return await asyncio.wait_for(collect(), timeout_s)
    except asyncio.TimeoutError:
        raise BodyError(408, f"the request body took over {timeout_s:g} s to arrive") from None
    except ClientDisconnect:
        raise BodyError(400, "the client went away while sending the request") from None


def header_timeout_protocol() -> type:
    """uvicorn's h11 protocol with a deadline for the first request's headers (slow-header clients, "slowloris",
    would otherwise hold a connection slot for ever); ``HEADER_TIMEOUT_S`` is read when a connection opens."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeout(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._header_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._header_deadline)

        def _header_deadline(self) -> None:
            if self.cycle is None and not self.transport.is_closing():  # no complete request yet: close
                self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self._header_timer.cancel()
            super().connection_lost(exc)

    return HeaderTimeout
