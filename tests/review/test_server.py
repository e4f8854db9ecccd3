"""The server: the token on every request, only the review's photos, never a path from a
request, never a photo's own bytes; the API and its errors."""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path

import pytest

from mkt_tag.results import Tag, TagResult, write_results
from mkt_tag.review import open_review
from mkt_tag.review.server import COOKIE, HEADER, ReviewServer
from mkt_tag.review.thumbnails import Thumbnails
from tests.conftest import make_photo
from tests.review.conftest import photo_id


def request(server: ReviewServer, path: str, token: str | None = "query", body=None, headers=None):
    """(status, headers, body) of one request; ``token``: "query", "header", "cookie", None or
    a wrong token given in the query."""
    headers = dict(headers or {})
    if token == "header":
        headers[HEADER] = server.token
    elif token == "cookie":
        headers["Cookie"] = f"{COOKIE}={server.token}"
    elif token is not None:
        given = server.token if token == "query" else token
        path += ("&" if "?" in path else "?") + f"token={given}"
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    data = None if body is None else json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = "application/json"
    connection.request("GET" if data is None else "POST", path, body=data, headers=headers)
    response = connection.getresponse()
    answer = response.status, dict(response.getheaders()), response.read()
    connection.close()
    return answer


def test_it_listens_on_127_0_0_1_with_a_random_token(server, review, isolated_cache):
    assert server.server_address[0] == "127.0.0.1"
    assert server.url.startswith(f"http://127.0.0.1:{server.server_address[1]}/?token=")
    other = ReviewServer(review, Thumbnails([], isolated_cache))
    assert other.token != server.token and len(other.token) >= 32
    other.server_close()


@pytest.mark.parametrize(
    "path", ["/", "/static/app.js", "/api/photos", "/api/labels", "/api/photo/0", "/thumb/0"]
)
def test_every_request_needs_the_token(server, path):
    assert request(server, path, token=None)[0] == 403
    assert request(server, path, token="wrong-token")[0] == 403
    assert request(server, path, token="cookie")[0] == 200
    assert request(server, path, token="header")[0] == 200


def test_the_page_sets_the_cookie_and_carries_the_token(server):
    status, headers, body = request(server, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert f"{COOKIE}={server.token}" in headers["Set-Cookie"]
    assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
    assert f'content="{server.token}"'.encode() in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]


def test_changes_need_the_header_not_only_the_cookie(server, review, tagged):
    """A form on another site can make the browser send the cookie, never the header."""
    decision = {"id": 0, "label": "dog", "decision": "reject"}
    assert request(server, "/api/decide", token="cookie", body=decision)[0] == 403
    assert request(server, "/api/decide", token="query", body=decision)[0] == 403
    assert not (tagged["root"] / "tags.corrections.jsonl").exists()
    status, _, body = request(server, "/api/decide", token="header", body=decision)
    assert status == 200 and json.loads(body)["id"] == 0
    assert (tagged["root"] / "tags.corrections.jsonl").exists()


@pytest.mark.parametrize(
    "path",
    [
        "/thumb/../../../etc/passwd",
        "/thumb/..%2F..%2Fetc%2Fpasswd",
        "/thumb//etc/passwd",
        "/thumb/%2Fetc%2Fpasswd",
        "/static/../results.py",
        "/static/..%2F__init__.py",
        "/thumb/4",  # one past the last photo
        "/thumb/-1",
        "/preview/99999",
        "/../../tags.csv",
        "/photos/a.jpg",
    ],
)
def test_no_path_from_a_request_reaches_a_file(server, path):
    status, headers, body = request(server, path, token="header")
    assert status == 404, body
    assert headers["Content-Type"] == "application/json"
    assert b"root:" not in body and b"import" not in body


def test_photos_are_sent_as_thumbnails_never_as_their_bytes(server, review):
    a = photo_id(review, "a.jpg")
    original = review.photos[a].path.read_bytes()
    for kind in ("thumb", "preview"):
        status, headers, body = request(server, f"/{kind}/{a}", token="header")
        assert status == 200 and headers["Content-Type"] == "image/jpeg"
        assert body.startswith(b"\xff\xd8") and body != original


def test_a_results_file_naming_a_secret_gives_nothing(tmp_path, isolated_cache):
    """A symlink (or a plain row) naming a file that is not an image: 404, its bytes never
    leave the machine, even though the results name it."""
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("root:password\n")
    folder = tmp_path / "photos"
    make_photo(folder / "real.jpg")
    os.symlink(secret, folder / "link.jpg")
    results = tmp_path / "tags.jsonl"
    rows = [TagResult(folder / "link.jpg", [Tag("dog", 0.5)]), TagResult(secret, [])]
    write_results(results, [*rows, TagResult(folder / "real.jpg", [Tag("cat", 0.5)])])
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    review = open_review(results, labels)
    server = ReviewServer(review, Thumbnails([p.path for p in review.photos], isolated_cache))
    import threading

    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for photo in review.photos:
            status, _, body = request(server, f"/thumb/{photo.id}", token="header")
            assert b"password" not in body
            assert status == (200 if photo.path.name == "real.jpg" else 404)
    finally:
        server.shutdown()
        server.server_close()


def test_a_folder_leaves_out_symlinks_that_point_out_of_it(tmp_path):
    from mkt_tag.review.photos import load_photos
    from mkt_tag.sidecars import write_sidecar

    outside = make_photo(tmp_path / "outside" / "private.jpg")
    folder = tmp_path / "photos"
    inside = make_photo(folder / "mine.jpg")
    os.symlink(outside, folder / "link.jpg")
    for image in (inside, folder / "link.jpg", outside):
        write_sidecar(image, [Tag("dog", 0.6)], "xmp")
    assert [photo.path.name for photo in load_photos(folder)] == ["mine.jpg"]


def test_the_api_pages_and_decides(server, review):
    status, _, body = request(server, "/api/photos?label=dog&sort=borderline&limit=1")
    page = json.loads(body)
    assert status == 200 and page["total"] == 2 and [p["name"] for p in page["photos"]] == ["c.jpg"]
    c = page["photos"][0]["id"]
    change = {"id": c, "label": "beach", "decision": "accept"}
    status, _, body = request(server, "/api/decide", token="header", body=change)
    assert json.loads(body)["tags"][-1] == {"label": "beach", "score": None, "verdict": "added"}
    status, _, body = request(server, "/api/reviewed", token="header", body={"id": c, "done": True})
    assert json.loads(body)["reviewed"] is True
    labels = json.loads(request(server, "/api/labels")[2])
    assert labels["summary"]["reviewed"] == 1
    assert {"label": "beach", "photos": 2, "rejected": 0} in labels["labels"]


@pytest.mark.parametrize(
    "path, body, message",
    [
        ("/api/photos?low=abc", None, "bad number"),
        ("/api/photos?low=nan", None, "score range"),
        ("/api/photos?sort=nope", None, "unknown sort"),
        ("/api/decide", {"id": "0", "label": "dog", "decision": "accept"}, "'id' must be a number"),
        ("/api/decide", {"id": 0, "label": "giraffe", "decision": "accept"}, "not a label"),
        ("/api/decide", {"id": 0, "label": "dog", "decision": "yes"}, "unknown decision"),
        ("/api/decide", [1, 2], "expected a JSON object"),
        ("/api/reviewed", {"id": 0, "done": "yes"}, "'done' must be true or false"),
    ],
)
def test_bad_requests_get_one_clear_message(server, path, body, message):
    status, _, answer = request(server, path, token="header", body=body)
    assert status == 400 and message in json.loads(answer)["error"]


def test_a_port_in_use_is_one_clear_error(server, review, isolated_cache):
    from mkt_tag.errors import OutputError

    with pytest.raises(OutputError, match=f"cannot listen on 127.0.0.1:{server.server_address[1]}"):
        ReviewServer(review, Thumbnails([], isolated_cache), port=server.server_address[1])


def test_the_page_ships_with_the_package():
    """pyproject's package data names the page's files, or the wheel would lack them."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    from mkt_tag.review.server import static_file

    project = Path(__file__).resolve().parents[2] / "pyproject.toml"
    data = tomllib.loads(project.read_text())["tool"]["setuptools"]["package-data"]["mkt_tag"]
    assert "review/static/*" in data
    for name in ("index.html", "app.js", "app.css"):
        assert static_file(name)
