"""The review web app (Starlette): one page, a small JSON API and the images, all behind a token.

Every request needs the session's token (``?token=`` or the ``X-Review-Token`` header) or gets 403; the
server opens only the images of its own list, by position (no path ever comes from the client); request
bodies are limited to ``MAX_BODY`` bytes; bad input gets a 4xx with a one-line reason, never a traceback.
The page's JavaScript and CSS are files of this package (no CDN: it works offline).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from .imaging import served_bytes
from .session import AnswerError, Session

HERE = Path(__file__).parent
MAX_BODY = 4096  # bytes; an answer is ~200
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


class TokenGate:
    """ASGI middleware: 403 without the token, 411/413 for a body of unknown or excessive size."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        given = request.query_params.get("token") or request.headers.get("x-review-token") or ""
        if not secrets.compare_digest(given.encode(), self.token.encode()):
            return await PlainTextResponse("forbidden: open the URL with the token the server printed", 403,
                                           headers=NO_STORE)(scope, receive, send)
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                return await PlainTextResponse("length required", 411)(scope, receive, send)
            if int(length) > MAX_BODY:
                return await PlainTextResponse(f"request body over {MAX_BODY} bytes", 413)(scope, receive, send)
        return await self.app(scope, receive, send)


def _position(request: Request, session: Session) -> int | None:
    try:
        position = int(request.path_params["position"])
    except (KeyError, ValueError):
        return None
    return position if 0 <= position < session.n else None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status, headers=NO_STORE)


def create_app(session: Session, token: str) -> TokenGate:
    """The ASGI app for ``session``, gated by ``token``."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    templates = Jinja2Templates(env=env)

    async def page(request: Request) -> Response:
        return templates.TemplateResponse(request, "review.html", {"mode": session.mode, "reader": session.reader},
                                          headers=NO_STORE)

    async def state(request: Request) -> Response:
        return JSONResponse(session.state(), headers=NO_STORE)

    async def item(request: Request) -> Response:
        position = _position(request, session)
        if position is None:
            return _error(404, f"no image at that position (0..{session.n - 1})")
        return JSONResponse(session.item(position), headers=NO_STORE)

    async def image(request: Request) -> Response:
        position = _position(request, session)
        if position is None:
            return _error(404, "no image at that position")
        return Response(served_bytes(session.items[position].path), media_type="image/jpeg", headers=NO_STORE)

    async def nearest(request: Request) -> Response:
        position = _position(request, session)
        if session.mode != "qc" or position is None or session.items[position].nearest is None:
            return _error(404, "no nearest training image for that position")
        path = session.items[position].nearest
        if not path.is_file():
            return _error(404, f"the nearest training image {path.name} is not where memorisation.csv says")
        return Response(served_bytes(path), media_type="image/jpeg", headers=NO_STORE)

    async def answer(request: Request) -> Response:
        position = _position(request, session)
        if position is None:
            return _error(404, "no image at that position")
        try:
            body = json.loads(await request.body())
            return JSONResponse(session.answer(position, body), headers=NO_STORE)
        except (ValueError, RecursionError) as exc:  # bad JSON (or nested too deep), or a wrong answer
            return _error(400, str(exc) if isinstance(exc, AnswerError) else "the body must be JSON")

    async def undo(request: Request) -> Response:
        position = session.log.undo()
        return JSONResponse({"undone": position, **session.state()}, headers=NO_STORE)

    routes = [
        Route("/", page),
        Route("/api/state", state),
        Route("/api/item/{position}", item),
        Route("/api/answer/{position}", answer, methods=["POST"]),
        Route("/api/undo", undo, methods=["POST"]),
        Route("/image/{position}", image),
        Route("/nearest/{position}", nearest),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    return TokenGate(Starlette(routes=routes), token)
