"""GET /api/v1/openapi.json: an OpenAPI 3.1 document built from the code, covering every route."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from mediagate import errors
from mediagate.web import tus
from mediagate.web.api import document
from mediagate.web.app import create_app
from mediagate.web.problems import problem_type
from support.api import Api, ApiFactory, make_settings, md5_header
from support.browser import browser_tests, launched_chromium, open_page


async def fetch_document(api: Api) -> dict[str, Any]:
    answer = await api.client.get("/api/v1/openapi.json")  # no token: it holds no secret
    assert answer.status == 200
    assert answer.content_type == "application/json"
    return await answer.json()


async def test_the_document_is_valid_openapi_3_1(local_api: Api) -> None:
    document = await fetch_document(local_api)
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_every_api_route_of_the_app_is_documented_and_nothing_else(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path / "data"))
    registered = set()
    for route in app.router.routes():
        if route.resource is None or not route.resource.canonical.startswith("/api/v1/"):
            continue
        path = route.resource.canonical
        # A tus route takes any method and dispatches the verbs it knows itself.
        verbs = tus.DISPATCHED[path] if route.method == "*" else [route.method]
        registered |= {(verb.lower(), path) for verb in verbs}
    paths = document(10)["paths"]
    documented = {(method, path) for path, item in paths.items() for method in item}
    assert registered == documented


async def test_every_problem_the_server_sends_is_documented_at_its_status(local_api: Api) -> None:
    """errors.py declares every problem the server answers (web/problems.py builds each
    body from one): each is in the document, at its status, and the document has no other."""
    document = await fetch_document(local_api)
    documented = {
        (type_, int(status))
        for item in document["paths"].values()
        for operation in item.values()
        for status, answer in operation["responses"].items()
        for schema in answer.get("content", {}).get("application/problem+json", {}).values()
        for type_ in schema["allOf"][1]["properties"]["type"]["enum"]
    }
    codes = [kind.code for kind in errors.declared()]
    assert len(codes) == len(set(codes)), "a code declared twice"
    assert documented == {
        (problem_type(kind), kind.status) for kind in errors.declared() if kind.documented
    }


async def test_the_chunk_body_headers_and_bearer_scheme_are_described(local_api: Api) -> None:
    document = await fetch_document(local_api)
    chunk = document["paths"]["/api/v1/media/upload/{session_id}/chunk/{chunk_number}"]["post"]
    assert set(chunk["requestBody"]["content"]) == {
        "application/octet-stream",
        "multipart/form-data",
    }
    assert {"Content-MD5", "X-Chunk-SHA256"} <= {p["name"] for p in chunk["parameters"]}
    assert "Retry-After" in chunk["responses"]["503"]["headers"]
    stream = document["paths"]["/api/v1/media/stream/{media_id}"]["get"]
    assert "Range" in {p["name"] for p in stream["parameters"]}
    assert "Content-Range" in stream["responses"]["206"]["headers"]
    assert "ETag" in stream["responses"]["200"]["headers"]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["security"] == [{"bearer": []}]


async def test_the_largest_size_is_the_servers_setting(
    start_api: ApiFactory, tmp_path: Path
) -> None:
    api = await start_api(make_settings(tmp_path / "data", max_upload_size=1000))
    document = await fetch_document(api)
    size = document["components"]["schemas"]["InitiateRequest"]["properties"]["size"]
    assert size["maximum"] == 1000
    refused = await api.initiate(size=1001)
    assert refused.status == 413


async def test_the_docs_page_renders_the_document_from_its_own_files(local_api: Api) -> None:
    page = await local_api.client.get("/api/v1/docs")  # no token
    assert page.status == 200
    assert page.content_type == "text/html"
    html = await page.text()
    scripts = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert scripts == [
        "/static/icon.svg",  # the web page's: no request for a missing /favicon.ico
        "docs/swagger-ui.css",
        "docs/swagger-ui-bundle.js",
        "docs/start.js",
    ]
    for path, content_type in [
        ("docs/swagger-ui.css", "text/css"),
        ("docs/swagger-ui-bundle.js", "text/javascript"),
        ("docs/start.js", "text/javascript"),
    ]:
        asset = await local_api.client.get(f"/api/v1/{path}")
        assert asset.status == 200
        assert asset.content_type == content_type
    start = await (await local_api.client.get("/api/v1/docs/start.js")).text()
    # The document beside the page, and no validator badge (an outside host).
    assert 'url: "openapi.json"' in start and "validatorUrl: null" in start
    assert "http" not in html + start


async def test_the_docs_page_serves_no_other_file(local_api: Api) -> None:
    for name in ["index.html", "package.json", "update.sh", "..%2Fopenapi.py", "nope.js"]:
        answer = await local_api.client.get(f"/api/v1/docs/{name}")
        assert answer.status == 404, name
        assert answer.content_type == "application/problem+json"


def assert_documented(document: dict[str, Any], template: str, answer: Any, body: bytes) -> None:
    """The answer's status, content type, required headers and JSON body are as documented."""
    operation = document["paths"][template][answer.method.lower()]
    documented = operation["responses"].get(str(answer.status))
    assert documented is not None, f"{answer.method} {template}: {answer.status} is undocumented"
    for name, header in documented.get("headers", {}).items():
        if header.get("required"):
            assert name in answer.headers, f"{answer.status} without {name}"
        if name in answer.headers and "pattern" in header["schema"]:
            assert re.search(header["schema"]["pattern"], answer.headers[name]), name
    content = documented.get("content", {})
    if answer.method == "HEAD" or not content:
        return
    media_type = answer.content_type
    assert media_type in content or "*/*" in content, f"{media_type} is undocumented"
    if media_type.endswith("json"):
        schema = {**content[media_type]["schema"], "components": document["components"]}
        Draft202012Validator(schema).validate(json.loads(body))


class Recorder:
    """Calls the API as `api` does, checking every answer against the document."""

    def __init__(self, api: Api, document: dict[str, Any]) -> None:
        self.api = api
        self.document = document

    async def call(self, method: str, template: str, path: str, **kwargs: Any) -> tuple[Any, bytes]:
        headers = {**self.api.headers, **kwargs.pop("headers", {})}
        answer = await self.api.client.request(method, path, headers=headers, **kwargs)
        body = await answer.read()
        assert_documented(self.document, template, answer, body)
        return answer, body


UPLOAD = "/api/v1/media/upload/{session_id}"
STREAM = "/api/v1/media/stream/{media_id}"


async def upload_through(recorder: Recorder, data: bytes) -> str:
    """One upload, every step's answer checked; the media id."""
    answer, body = await recorder.call(
        "POST",
        "/api/v1/media/upload/initiate",
        "/api/v1/media/upload/initiate",
        json={"filename": "clip.mp4", "size": len(data)},
    )
    assert answer.status == 201
    session = json.loads(body)["session_id"]
    answer, _ = await recorder.call(
        "POST",
        UPLOAD + "/chunk/{chunk_number}",
        f"/api/v1/media/upload/{session}/chunk/0",
        data=data,
        headers=md5_header(data),
    )
    assert answer.status == 200
    answer, _ = await recorder.call("GET", UPLOAD, f"/api/v1/media/upload/{session}")
    assert answer.status == 200
    answer, body = await recorder.call(
        "POST", UPLOAD + "/complete", f"/api/v1/media/upload/{session}/complete"
    )
    assert answer.status == 201
    return json.loads(body)["media_id"]


async def test_a_whole_local_upload_and_playback_answer_as_documented(local_api: Api) -> None:
    """The answers the fuzzer cannot reach without real bytes: 206, 304, 416, 412."""
    recorder = Recorder(local_api, await fetch_document(local_api))
    media = await upload_through(recorder, os.urandom(1000))
    for template, path in [
        ("/api/v1/media/info/{media_id}", f"/api/v1/media/info/{media}"),
        ("/api/v1/media", "/api/v1/media?limit=1"),
    ]:
        answer, _ = await recorder.call("GET", template, path)
        assert answer.status == 200
    stream = f"/api/v1/media/stream/{media}"
    # (GET, HEAD): HEAD ignores Range.
    for headers, statuses in [
        ({}, (200, 200)),
        ({"Range": "bytes=10-19"}, (206, 200)),
        ({"Range": "bytes=0-1,5-6"}, (206, 200)),
        ({"If-None-Match": f'"{media}"'}, (304, 304)),
        ({"Range": "bytes=5000-"}, (416, 200)),
        ({"If-Match": '"other"'}, (412, 412)),
    ]:
        for method, status in zip(("GET", "HEAD"), statuses, strict=True):
            answer, _ = await recorder.call(method, STREAM, stream, headers=headers)
            assert answer.status == status
    answer, _ = await recorder.call(
        "DELETE", "/api/v1/media/delete/{media_id}", f"/api/v1/media/delete/{media}"
    )
    assert answer.status == 204
    answer, _ = await recorder.call("GET", STREAM, stream)
    assert answer.status == 404


async def test_an_s3_upload_redirects_as_documented(s3_api: Api) -> None:
    recorder = Recorder(s3_api, await fetch_document(s3_api))
    media = await upload_through(recorder, os.urandom(1000))
    stream = f"/api/v1/media/stream/{media}"
    answer, _ = await recorder.call("GET", STREAM, stream, allow_redirects=False)
    assert answer.status == 302


TUS = "/api/v1/tus"
TUS_UPLOAD = "/api/v1/tus/{upload_id}"


async def test_a_tus_upload_answers_as_documented(local_api: Api) -> None:
    """Each tus verb's success, and the tus problems, checked against the document."""
    recorder = Recorder(local_api, await fetch_document(local_api))
    tus = {"Tus-Resumable": "1.0.0"}
    answer, _ = await recorder.call("OPTIONS", TUS, TUS)
    assert answer.status == 204
    data = os.urandom(100)
    answer, _ = await recorder.call(
        "POST",
        TUS,
        TUS,
        data=data[:10],
        headers={
            **tus,
            "Upload-Length": "100",
            "Upload-Metadata": "filename " + base64.b64encode(b"clip.mp4").decode(),
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert answer.status == 201
    upload = answer.headers["Location"].rsplit("/", 1)[1]
    path = f"{TUS}/{upload}"
    answer, _ = await recorder.call("OPTIONS", TUS_UPLOAD, path)
    assert answer.status == 204
    answer, _ = await recorder.call("HEAD", TUS_UPLOAD, path, headers=tus)
    assert (answer.status, answer.headers["Upload-Offset"]) == (200, "10")
    octets = {**tus, "Content-Type": "application/offset+octet-stream"}
    wrong_md5 = "md5 " + base64.b64encode(bytes(16)).decode()
    for headers, status in [
        ({**octets, "Upload-Offset": "0"}, 409),
        ({**octets, "Upload-Offset": "10", "Upload-Checksum": wrong_md5}, 460),
        ({**tus, "Upload-Offset": "10", "Content-Type": "text/plain"}, 415),
        ({"Upload-Offset": "10", "Content-Type": "application/offset+octet-stream"}, 412),
        ({**octets, "Upload-Offset": "10", "Upload-Length": "99"}, 400),
    ]:
        answer, _ = await recorder.call("PATCH", TUS_UPLOAD, path, data=data[10:], headers=headers)
        assert answer.status == status, headers
    answer, _ = await recorder.call(
        "PATCH", TUS_UPLOAD, path, data=data[10:50], headers={**octets, "Upload-Offset": "10"}
    )
    assert (answer.status, answer.headers["Upload-Offset"]) == (204, "50")
    answer, _ = await recorder.call("DELETE", TUS_UPLOAD, path, headers=tus)
    assert answer.status == 204
    answer, _ = await recorder.call("HEAD", TUS_UPLOAD, path, headers=tus)
    assert answer.status == 404


IETF = "/api/v1/uploads"
IETF_UPLOAD = "/api/v1/uploads/{upload_id}"


async def test_an_ietf_upload_answers_as_documented(local_api: Api) -> None:
    """Each IETF operation's success, and the draft's problems with their IANA types,
    checked against the document."""
    recorder = Recorder(local_api, await fetch_document(local_api))
    answer, _ = await recorder.call("OPTIONS", IETF, IETF)
    assert answer.status == 204
    data = os.urandom(100)
    answer, _ = await recorder.call(
        "POST",
        IETF,
        IETF,
        data=data[:10],
        headers={
            "Upload-Complete": "?0",
            "Upload-Length": "100",
            "Content-Disposition": 'inline; filename="clip.mp4"',
        },
    )
    assert answer.status == 201
    path = answer.headers["Location"].removeprefix(str(local_api.client.make_url("")))
    for method in ("HEAD", "GET"):
        answer, _ = await recorder.call(method, IETF_UPLOAD, path)
        assert (answer.status, answer.headers["Upload-Offset"]) == (204, "10")
    partial = {"Content-Type": "application/partial-upload", "Upload-Complete": "?0"}
    iana = "https://iana.org/assignments/http-problem-types#"
    for headers, status, type_ in [
        ({**partial, "Upload-Offset": "0"}, 409, iana + "mismatching-upload-offset"),
        (
            {**partial, "Upload-Offset": "10", "Upload-Length": "99"},
            400,
            iana + "inconsistent-upload-length",
        ),
        ({**partial, "Upload-Offset": "10", "Upload-Draft-Interop-Version": "3"}, 400, None),
        ({**partial, "Upload-Offset": "10", "Content-Type": "text/plain"}, 415, None),
    ]:
        answer, body = await recorder.call(
            "PATCH", IETF_UPLOAD, path, data=data[10:], headers=headers
        )
        assert answer.status == status, headers
        assert answer.headers["Upload-Complete"] == "?0"
        if type_ is not None:
            assert json.loads(body)["type"] == type_
    answer, _ = await recorder.call(
        "PATCH", IETF_UPLOAD, path, data=data[10:50], headers={**partial, "Upload-Offset": "10"}
    )
    assert (answer.status, answer.headers["Upload-Offset"]) == (204, "50")
    answer, body = await recorder.call(
        "PATCH",
        IETF_UPLOAD,
        path,
        data=data[50:],
        headers={**partial, "Upload-Offset": "50", "Upload-Complete": "?1"},
    )
    assert answer.status == 201
    media = json.loads(body)["media_id"]
    answer, body = await recorder.call(
        "PATCH",
        IETF_UPLOAD,
        path,
        data=b"x",
        headers={**partial, "Upload-Offset": "100", "Upload-Complete": "?1"},
    )
    assert (answer.status, json.loads(body)["type"]) == (400, iana + "completed-upload")
    answer, _ = await recorder.call("DELETE", IETF_UPLOAD, path)
    assert answer.status == 204
    answer, _ = await recorder.call("HEAD", IETF_UPLOAD, path)
    assert answer.status == 404
    info = await local_api.client.get(f"/api/v1/media/info/{media}", headers=local_api.headers)
    assert info.status == 200


async def test_the_docs_page_and_its_files_are_guarded_and_not_cached_publicly(
    local_api: Api,
) -> None:
    for path in ["docs", "docs/swagger-ui.css", "docs/swagger-ui-bundle.js", "docs/start.js"]:
        answer = await local_api.client.get(f"/api/v1/{path}")
        assert answer.status == 200, path
        policy = answer.headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy, path
        assert "unsafe" not in policy
        assert answer.headers["Referrer-Policy"] == "no-referrer"
        assert answer.headers["Cache-Control"] == "no-cache"
        again = await local_api.client.get(
            f"/api/v1/{path}", headers={"If-None-Match": answer.headers["ETag"]}
        )
        assert again.status == 304, path


@browser_tests
async def test_the_docs_page_renders_under_its_policy(local_api: Api, tmp_path: Path) -> None:
    async with launched_chromium() as browser:
        await docs_page_renders(browser, str(local_api.client.make_url("/api/v1/docs")), tmp_path)


async def docs_page_renders(browser: Any, url: str, tmp_path: Path) -> None:
    # A script, style or image the policy refuses is a console error.
    page, problems = await open_page(browser, url)
    await page.get_by_role("button", name="Authorize").wait_for()
    await page.get_by_text("/api/v1/media/upload/initiate").first.click()  # opened
    await page.get_by_role("button", name="Try it out").first.wait_for()
    await page.get_by_role("button", name="Authorize").first.click()
    await page.get_by_text("Available authorizations").wait_for()
    await page.screenshot(path=tmp_path / "docs.png")
    assert problems == []
