"""The station's page: live slots, counts, the last 50 events and boards per hour, read-only.

A small Starlette app served by uvicorn in a thread of its own (install
``atflash[station]``). Every route is a GET: nothing on the page can start
a write. ``/`` is the page, one HTML file with its style and script
inlined from :mod:`atflash.station` 's ``static`` folder, shipped in the
wheel (factory networks are often offline: no CDN, no build step).
``/events`` streams the station's snapshot as server-sent events whenever
it changes (no page reloads); ``/api/state`` is the same snapshot once.

With a token (:mod:`.webauth`) every request must carry it, as
``Authorization: Bearer TOKEN`` or ``?token=TOKEN``; anything else is 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from atflash.errors import AtflashError, InputError
from atflash.station.webauth import allowed

_PUSH_EVERY = 0.25  # seconds between looks for a change to push
_KEEPALIVE = 15.0  # a comment line so proxies keep an idle stream open
_START_TIMEOUT = 10.0


def page() -> str:
    """The page with its style and script inlined: one response, nothing fetched elsewhere."""
    static = resources.files("atflash.station") / "static"
    html = (static / "index.html").read_text(encoding="utf-8")
    css = (static / "station.css").read_text(encoding="utf-8")
    js = (static / "station.js").read_text(encoding="utf-8")
    return html.replace("/*STYLE*/", css).replace("/*SCRIPT*/", js)


def make_app(station: Any, *, token: str | None, closing: threading.Event) -> Any:
    """The ASGI app for ``station`` (anything with ``snapshot()`` and ``version``)."""
    try:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
        from starlette.routing import Route
    except ImportError:
        raise AtflashError(
            "the station's page needs the web server", hint="pip install 'atflash[station]'"
        ) from None

    html = page()

    async def index(_request: Request) -> Response:
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    async def state(_request: Request) -> Response:
        return JSONResponse(station.snapshot(), headers={"Cache-Control": "no-store"})

    async def events(request: Request) -> Response:
        async def stream() -> AsyncIterator[str]:
            seen, quiet = -1, time.monotonic()
            while not closing.is_set() and not await request.is_disconnected():
                if station.version != seen:
                    snapshot = station.snapshot()
                    seen = snapshot["version"]
                    quiet = time.monotonic()
                    yield f"data: {json.dumps(snapshot, separators=(',', ':'))}\n\n"
                elif time.monotonic() - quiet > _KEEPALIVE:
                    quiet = time.monotonic()
                    yield ": still here\n\n"
                await asyncio.sleep(_PUSH_EVERY)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    app = Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/events", events, methods=["GET"]),
            Route("/api/state", state, methods=["GET"]),
        ]
    )
    return _TokenGate(app, token)


class _TokenGate:
    """ASGI middleware: with a token, a request without it (header or query) gets 401."""

    def __init__(self, app: Any, token: str | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.token:
            from urllib.parse import parse_qsl

            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
            }
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            if not allowed(self.token, headers, query):
                body = b"401: this page needs its token (?token=... or Authorization: Bearer ...)\n"
                await send({
                    "type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"www-authenticate", b'Bearer realm="atflash station"'),
                                (b"content-length", str(len(body)).encode())],
                })  # fmt: skip
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class WebServer:
    """uvicorn serving the page from a thread; :meth:`close` stops it and waits."""

    def __init__(self, app: Any, host: str, port: int, closing: threading.Event) -> None:
        import uvicorn

        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False,
            lifespan="off", timeout_graceful_shutdown=1,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.closing = closing
        self.host = host
        self.thread = threading.Thread(target=self._serve, name="atflash-station-web", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.server.started:
            self.close()
            raise InputError(
                f"--web {host}:{port}: cannot listen there",
                hint="choose another port, or stop what uses it",
            )
        sockets = self.server.servers[0].sockets
        self.port = sockets[0].getsockname()[1]

    def _serve(self) -> None:
        with contextlib.suppress(SystemExit):  # uvicorn exits its thread when it cannot bind
            asyncio.run(self.server.serve())

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def close(self) -> None:
        self.closing.set()
        self.server.should_exit = True
        self.thread.join(_START_TIMEOUT)


def serve(station: Any, host: str, port: int, *, token: str | None) -> WebServer:
    """Serve ``station``'s page at ``host:port`` (0: a free port) until ``close()``."""
    closing = threading.Event()
    return WebServer(make_app(station, token=token, closing=closing), host, port, closing)
