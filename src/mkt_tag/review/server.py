"""The local web server of ``mkt-tag review``: the page, its JSON API and the thumbnails.

The standard library's threading HTTP server is enough for one person on their own machine,
and adds nothing to install. What keeps it safe:

- it listens on 127.0.0.1 unless asked otherwise;
- every request needs the review's random token: in the first URL (``?token=``), which
  sets a same-site cookie, or in the ``X-Review-Token`` header; without it, 403. Changes
  (POST) need the header, which the page takes from itself, so another site cannot make
  the browser send one (no cross-site request forgery);
- a photo is named by its number in the review, never by a path: ``../``, absolute paths and
  symlinks in a request name nothing. And no photo's bytes are ever sent, only JPEG
  thumbnails decoded and encoded again, so not even a results file naming a secret file
  gets it out;
- the page's files are a fixed list of the package's own;
- it writes nothing but the corrections file (and thumbnails in the cache).
"""

from __future__ import annotations

import http.cookies
import json
import re
import secrets
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from mkt_tag.errors import MktTagError, OutputError, UsageError
from mkt_tag.review.session import Query, Review
from mkt_tag.review.thumbnails import PREVIEW, THUMBNAIL, Thumbnails

COOKIE = "mkt_tag_review"
HEADER = "X-Review-Token"
MAX_BODY = 64 * 1024  # a decision is a few dozen bytes
_STATIC = {  # what the page is made of: URL -> (package file, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
}
_IMAGES = re.compile(r"/(?P<kind>thumb|preview)/(?P<id>[0-9]{1,9})")
_PHOTO = re.compile(r"/api/photo/(?P<id>[0-9]{1,9})")
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def static_file(name: str) -> bytes:
    """One of the page's files, shipped inside the package (``review/static/``)."""
    return resources.files("mkt_tag.review").joinpath("static", name).read_bytes()


class ReviewServer(ThreadingHTTPServer):
    """Serves one review until :meth:`shutdown`. ``url`` is what the person opens."""

    daemon_threads = True  # a browser's kept-alive connections must not hold up the end

    def __init__(
        self,
        review: Review,
        thumbnails: Thumbnails,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
    ) -> None:
        """Listen on ``host``:``port`` (0: a free port).

        Raises:
            OutputError: the address cannot be listened on (in use, not this machine's).
        """
        self.review = review
        self.thumbnails = thumbnails
        self.token = token or secrets.token_urlsafe(24)
        try:
            super().__init__((host, port), _Handler)
        except OSError as error:
            reason = (error.strerror or str(error)).lower()
            raise OutputError(f"cannot listen on {host}:{port} ({reason})") from None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/?token={quote(self.token)}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the browser closed a connection (a reload, a tab closed): nothing wrong
        super().handle_error(request, client_address)

    def server_close(self) -> None:
        self.thumbnails.close()
        super().server_close()


class _Handler(BaseHTTPRequestHandler):
    server: ReviewServer
    protocol_version = "HTTP/1.1"
    server_version = "mkt-tag-review"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per thumbnail would bury the URL; errors reach the page

    # --- who may ask ------------------------------------------------------------------

    def _token_from(self, query: dict[str, list[str]], header_only: bool) -> str:
        if (given := self.headers.get(HEADER)) is not None or header_only:
            return given or ""
        if "token" in query:
            return query["token"][0]
        cookies = http.cookies.SimpleCookie()
        try:
            cookies.load(self.headers.get("Cookie", ""))
        except http.cookies.CookieError:
            return ""
        morsel = cookies.get(COOKIE)
        return morsel.value if morsel is not None else ""

    def _allowed(self, query: dict[str, list[str]], header_only: bool = False) -> bool:
        given = self._token_from(query, header_only)
        if secrets.compare_digest(given.encode(), self.server.token.encode()):
            return True
        self._send_json({"error": "forbidden: open the URL mkt-tag review printed"}, 403)
        return False

    # --- requests ---------------------------------------------------------------------

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        if not self._allowed(query):
            return
        route = parts.path
        try:
            if route in _STATIC:
                self._send_static(route, set_cookie=route == "/" and "token" in query)
            elif route == "/api/photos":
                self._send_json(self.server.review.page(_query(query)))
            elif route == "/api/labels":
                review = self.server.review
                self._send_json({"labels": review.label_counts(), "summary": review.summary()})
            elif match := _PHOTO.fullmatch(route):
                self._send_json(self.server.review.photo(int(match["id"])))
            elif match := _IMAGES.fullmatch(route):
                self._send_image(int(match["id"]), match["kind"])
            else:
                self._send_json({"error": "not found"}, 404)
        except UsageError as error:
            self._send_json({"error": str(error)}, 400)

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        if not self._allowed(parse_qs(parts.query), header_only=True):
            return
        review = self.server.review
        try:
            body = self._body()
            if parts.path == "/api/decide":
                answer = review.decide(
                    _number(body, "id"), _text(body, "label"), _text(body, "decision")
                )
            elif parts.path == "/api/reviewed":
                done = body.get("done", True)
                if not isinstance(done, bool):
                    raise UsageError("'done' must be true or false")
                answer = review.mark_reviewed(_number(body, "id"), done)
            else:
                self._send_json({"error": "not found"}, 404)
                return
        except UsageError as error:
            self._send_json({"error": str(error)}, 400)
        except MktTagError as error:  # the corrections file cannot be written
            self._send_json({"error": f"not saved: {error}"}, 500)
        else:
            self._send_json(answer)

    def _body(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise UsageError("bad Content-Length") from None
        if not 0 < length <= MAX_BODY:
            raise UsageError(f"expected a JSON object of at most {MAX_BODY} bytes")
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError:
            raise UsageError("the request is not JSON") from None
        if not isinstance(body, dict):
            raise UsageError("expected a JSON object")
        return body

    # --- answers ----------------------------------------------------------------------

    def _send(self, status: int, kind: str, data: bytes, headers: dict[str, str]) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            for name, value in {**_SECURITY_HEADERS, **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the page moved on; nothing to tell

    def _send_json(self, value: Any, status: int = 200) -> None:
        data = json.dumps(value, ensure_ascii=False).encode()
        self._send(status, "application/json", data, {"Cache-Control": "no-store"})

    def _send_static(self, route: str, set_cookie: bool) -> None:
        name, kind = _STATIC[route]
        data = static_file(name)
        headers = {"Cache-Control": "no-store"}
        if route == "/":
            data = data.replace(b"{{TOKEN}}", self.server.token.encode())
        if set_cookie:
            headers["Set-Cookie"] = (
                f"{COOKIE}={self.server.token}; Path=/; HttpOnly; SameSite=Strict"
            )
        self._send(200, kind, data, headers)

    def _send_image(self, photo_id: int, kind: str) -> None:
        thumbnails = self.server.thumbnails
        if photo_id >= len(thumbnails.paths):
            self._send_json({"error": f"no photo {photo_id}"}, 404)
            return
        data = thumbnails.get(photo_id, THUMBNAIL if kind == "thumb" else PREVIEW)
        if data is None:
            self._send_json({"error": "not an image, or gone"}, 404)
            return
        self._send(200, "image/jpeg", data, {"Cache-Control": "private, max-age=3600"})


def _query(query: dict[str, list[str]]) -> Query:
    def one(name: str, default: str) -> str:
        return query.get(name, [default])[0]

    try:
        return Query(
            label=one("label", ""),
            low=float(one("low", "0")),
            high=float(one("high", "1")),
            sort=one("sort", "borderline"),
            status=one("status", "all"),
            text=one("text", ""),
            offset=int(one("offset", "0")),
            limit=int(one("limit", "60")),
        )
    except ValueError:
        raise UsageError("bad number in the query") from None


def _number(body: dict[str, Any], name: str) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise UsageError(f"{name!r} must be a number")
    return value


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{name!r} must be a text")
    return value.strip()
