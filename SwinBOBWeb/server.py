"""Start, guard and stop the web review server (``swinbob review OUT``).

The server refuses any request without the token when one is required (see :mod:`.folder`), serves
files only from inside the review folder, prints ``SwinBOB review ready at URL`` once the first
item is loaded, and stops cleanly on SIGTERM or Ctrl-C (aiohttp's signal handling; each decision
is already on disk when its button returns).
"""

from __future__ import annotations

import sys

from aiohttp import web

from .folder import (
    FILES_ROUTE,
    TOKEN_COOKIE,
    ReviewFolder,
    resolve_token,
    token_matches,
)

#: The line (prefix) printed once the server answers; the URL follows it.
READY_TEXT = "SwinBOB review ready at"


def guard(folder: ReviewFolder, token: str | None):
    """aiohttp middleware: 403 without the token (query ``token``, cookie or ``X-SwinBOB-Token``
    header) when one is required; the first page opened with ``?token=`` sets the cookie."""

    @web.middleware
    async def middleware(request: web.Request, handler):
        given = (request.query.get("token") or request.cookies.get(TOKEN_COOKIE)
                 or request.headers.get("X-SwinBOB-Token"))
        if not token_matches(token, given):
            return web.Response(status=403, text="SwinBOB review: this server needs its token (open the link "
                                "printed when it started, ending in ?token=...)\n")
        response = await handler(request)
        if token is not None and request.query.get("token") and request.path == "/":
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
        return response

    return middleware


def files_handler(folder: ReviewFolder):
    """``GET /review-files/NAME``: a file inside the review folder; 403 for a name leading outside."""

    async def handler(request: web.Request):
        try:
            return web.FileResponse(folder.inside(request.match_info["name"]))
        except PermissionError as error:
            return web.Response(status=403, text=f"{error}\n")
        except FileNotFoundError as error:
            return web.Response(status=404, text=f"{error}\n")

    return handler


def bind(wslink_server, folder: ReviewFolder, token: str | None) -> None:
    """Add the guard and the file route to the server's aiohttp application (before it starts)."""
    app = wslink_server.app
    app.middlewares.append(guard(folder, token))
    app.router.add_get(FILES_ROUTE + "{name:.*}", files_handler(folder))


def serve(path, host: str = "127.0.0.1", port: int = 8080, token: str | None = None, reviewer: str = "",
          out=None) -> None:
    """Serve the review of ``path`` (a folder holding ``qc_list.json``) until stopped.

    Args:
        host: address to bind; any other than loopback requires a token (made if none is given).
        port: TCP port (0: any free one).
        token: the access token (default ``$SWINBOB_REVIEW_TOKEN``; see :func:`.folder.resolve_token`).
        reviewer: the reviewer name each browser starts with (each may change its own).
        out: stream for the ready line (default stdout).
    Raises:
        FileNotFoundError: no QC list in ``path``. ValueError: a too short token.
    """
    from trame.app import get_server

    from .app import ReviewApp

    out = out or sys.stdout
    folder = ReviewFolder.open(path)
    token = resolve_token(host, token)
    server = get_server("swinbob-review", client_type="vue3")
    ReviewApp(server, folder, reviewer)
    server.controller.on_server_bind.add(lambda wslink_server: bind(wslink_server, folder, token))

    def announce(**_):
        url = f"http://{host}:{server.port}/" + (f"?token={token}" if token else "")
        print(f"{READY_TEXT} {url}", file=out, flush=True)
        if token:
            print("Give this link only to the reviewers: it carries the server's token.", file=out, flush=True)

    server.controller.on_server_ready.add(announce)
    server.start(host=host, port=port, open_browser=False, show_connection_info=False, disable_logging=True)
    print("SwinBOB review stopped; decisions are in " + str(folder.qcList.with_name(
        folder.qcList.stem + ".review.jsonl")), file=out, flush=True)
