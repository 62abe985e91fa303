"""GET /api/v1/openapi.json: an OpenAPI 3.1 document built from the code, covering every route."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from openapi_spec_validator import validate

from conftest import Api, ApiFactory, make_settings
from mediagate.core import errors
from mediagate.web.app import create_app
from mediagate.web.openapi import document
from mediagate.web.problems import PROBLEM_TYPE_BASE


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
    registered = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.resource.canonical.startswith("/api/v1/")
    }
    paths = document(10)["paths"]
    documented = {(method, path) for path, item in paths.items() for method in item}
    assert registered == documented


async def test_every_problem_type_of_the_engine_is_documented(local_api: Api) -> None:
    document = await fetch_document(local_api)
    documented = {
        type_
        for item in document["paths"].values()
        for operation in item.values()
        for answer in operation["responses"].values()
        for schema in answer.get("content", {}).get("application/problem+json", {}).values()
        for type_ in schema["allOf"][1]["properties"]["type"]["enum"]
    }
    problems = [
        kind
        for kind in vars(errors).values()
        if isinstance(kind, type) and issubclass(kind, errors.Problem)
    ]
    assert {PROBLEM_TYPE_BASE + kind.code for kind in problems} <= documented


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
    assert scripts == ["docs/swagger-ui.css", "docs/swagger-ui-bundle.js", "docs/start.js"]
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
