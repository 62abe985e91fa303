"""The IETF draft "Resumable Uploads for HTTP", over raw HTTP/1.1, against `mediagate serve`
on local disk and on S3.

Each case quotes the sentence of the draft it holds the server to: the editor's copy of
draft-ietf-httpbis-resumable-upload at httpwg/http-extensions b1b1c72f (2026-07-01, interop
version 8), unless it says "interop 6" (the same file at 5d70a627^, drafts -04/-05). Every
request is written on a socket of its own and the answer read off it as it comes, interim
responses (104) included. Each case runs as a user of its own.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from mediagate import tokens
from support.server_process import ServerProcess
from support.tier import tier_s3_env

pytestmark = [pytest.mark.store, pytest.mark.asyncio(loop_scope="module")]

SECRET = "ietf-spec-secret-long-enough-for-hs256"
COLLECTION = "/api/v1/uploads"
PARTIAL = {"Content-Type": "application/partial-upload"}
IANA = "https://iana.org/assignments/http-problem-types#"
LATEST = "8"
MAX_SIZE = 1024**3
DATA = b"0123456789"  # ten bytes, the length of most cases' uploads
PART = 5 * 1024**2  # MEDIAGATE_CHUNK_SIZE of the server: S3's smallest part
BIG = bytes(2 * PART + 1)  # two parts of PART and the last byte in a part of its own


def sha(name: str, data: bytes) -> str:
    return (
        f"{name}=:{base64.b64encode(hashlib.new(name.replace('-', ''), data).digest()).decode()}:"
    )


# --- one exchange on the wire ------------------------------------------------------------


@dataclass
class Message:
    status: int
    headers: dict[str, str]  # names lowercased


@dataclass
class Answer:
    interims: list[Message]
    final: Message
    body: bytes


async def exchange(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None,
    cut: int | None = None,
) -> Answer:
    """One request on its own connection (`body` None: chunked, in two pieces, with no
    Content-Length); every response read off the socket, 1xx first. `cut`: only that
    many bytes of the body are sent, and the connection is closed once a 104 says
    they all but a part's worth are kept (no final answer: status 0)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body is None:
            lines.append("Transfer-Encoding: chunked")
            payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (DATA[:4], DATA[4:]))
            payload += b"0\r\n\r\n"
        else:
            lines.append(f"Content-Length: {len(body)}")
            payload = body[:cut]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
        await writer.drain()
        interims = []
        async with asyncio.timeout(30):
            while True:
                message = await _message(reader)
                if message.status >= 200:
                    break
                interims.append(message)
                if cut is not None and int(message.headers.get("upload-offset", 0)) >= PART:
                    return Answer(interims, Message(0, {}), b"")
            rest = await reader.read() if method != "HEAD" else b""
        length = message.headers.get("content-length")
        return Answer(interims, message, rest[: int(length)] if length else rest)
    finally:
        writer.close()


async def _message(reader: asyncio.StreamReader) -> Message:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *lines = head.rstrip("\r\n").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Message(int(status_line.split()[1]), headers)


# --- the table ---------------------------------------------------------------------------


@dataclass
class Step:
    """A request and what its answer must show. Paths and header values may name {upload}
    (the case's upload, made by `given`) and {location} (the last Location answered).
    Expected header values are regular expressions; None: the header must be absent."""

    method: str
    path: str = "{upload}"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = b""
    status: int = 204
    expect: dict[str, str | None] = field(default_factory=dict)
    # Each 104 expected, in order, as header → pattern; None: any 104s are not checked.
    interims: list[dict[str, str | None]] | None = field(default_factory=list)
    problem: str | None = None  # the problem+json `type`
    fields: dict[str, Any] = field(default_factory=dict)  # JSON members, exactly
    cut: int | None = None  # send that many bytes of the body, then hang up (`exchange`)
    retry: bool = False  # asked again until the answer holds (the server finishing a cut)


@dataclass
class Case:
    name: str
    quote: str  # the draft's sentence
    steps: list[Step]
    given: dict[str, str] | None = None  # an upload made first: its creation's headers
    given_body: bytes = b""


def v(version: str = LATEST, **headers: str) -> dict[str, str]:
    """Request headers with the interop version (`Upload_Complete` for Upload-Complete)."""
    return {"Upload-Draft-Interop-Version": version} | {
        k.replace("_", "-"): value for k, value in headers.items()
    }


def append(offset: int, complete: bool, version: str = LATEST, **more: str) -> dict[str, str]:
    return v(version, Upload_Offset=str(offset), Upload_Complete="?1" if complete else "?0") | (
        PARTIAL | {k.replace("_", "-"): value for k, value in more.items()}
    )


def head(offset: int, complete: bool, length: int | None) -> Step:
    return Step(
        "HEAD",
        "{location}",
        headers=v(),
        expect={
            "Upload-Offset": str(offset),
            "Upload-Complete": "\\?1" if complete else "\\?0",
            "Upload-Length": None if length is None else str(length),
            "Upload-Limit": r"max-size=\d+, max-age=\d+",
            "Cache-Control": "no-store",
        },
    )


LOCATION_104 = {"Location": r"http://.+/api/v1/uploads/[^/]+", "Upload-Limit": r"max-size=\d+.*"}
MADE = {"Upload-Complete": "\\?1", "Location": ".+"}
OPEN = {"Upload-Length": "10"}
SHORT = {"Upload-Length": "5"}

CASES = [
    Case(
        "options-limits",
        "When responding to an OPTIONS request without the Upload-Complete header field, if "
        "the resource ... supports the creation of a resumable upload resource, the server "
        "MUST include the Upload-Limit header field (Upload Limit)",
        [
            Step(
                "OPTIONS",
                COLLECTION,
                expect={"Upload-Limit": rf"max-size={MAX_SIZE}, min-size=0"},
            )
        ],
    ),
    Case(
        "create-complete-with-104",
        "the server SHOULD announce the upload resource by sending an interim response with "
        "the 104 (Upload Resumption Supported) status code ... When sent, it MUST include "
        "Location header field pointing to the upload resource and MUST include the "
        "Upload-Limit header field (Upload Creation, Server Behavior); the server MUST also "
        "send ... Upload-Draft-Interop-Version ... to the 104 (Draft Version Identification)",
        [
            Step(
                "POST",
                COLLECTION,
                v(Upload_Complete="?1", Content_Disposition='inline; filename="a b.txt"'),
                DATA,
                status=201,
                interims=[LOCATION_104 | {"Upload-Draft-Interop-Version": LATEST}],
                expect=MADE | {"Upload-Offset": "10", "Upload-Length": "10"},
            ),
            Step("HEAD", "{location}", v(), expect={"Upload-Complete": "\\?1"}),
        ],
    ),
    Case(
        "the-media-is-a-media",
        "the response comes from the resource targeted by the initial request processing "
        "the representation (Upload Creation, Client Behavior): a media, named by "
        "Content-Disposition (For this purpose, the inline disposition type is RECOMMENDED)",
        [
            Step(
                "POST",
                COLLECTION,
                v(Upload_Complete="?1", Content_Disposition='inline; filename="clip.txt"'),
                DATA,
                status=201,
                interims=None,
                expect=MADE,
            ),
            Step("GET", "{media_info}", status=200, fields={"filename": "clip.txt", "size": 10}),
        ],
    ),
    Case(
        "no-104-without-interop-version",
        "Server implementations of draft versions of the protocol MUST NOT send a 104 "
        "(Upload Resumption Supported) informational response when the interop version ... "
        "is missing or mismatching (Draft Version Identification)",
        [
            Step("POST", COLLECTION, {"Upload-Complete": "?1"}, DATA, status=201, expect=MADE),
            Step(
                "POST",
                COLLECTION,
                v("7", Upload_Complete="?1"),
                DATA,
                status=400,
                problem="https://mediagate.dev/problems/interop-version-unsupported",
            ),
        ],
    ),
    Case(
        "create-incomplete-empty",
        "An Upload-Complete header field set to false is also valid. This can be used to "
        "retrieve the upload resource's URI before transferring any representation data "
        "(Upload Creation); the server MUST include the Location response header field ... "
        "and MUST include the Upload-Limit header field",
        [
            Step(
                "POST",
                COLLECTION,
                v(Upload_Complete="?0"),
                status=201,
                interims=[LOCATION_104],
                expect={
                    "Location": ".+",
                    "Upload-Complete": "\\?0",
                    "Upload-Offset": "0",
                    "Upload-Limit": r"max-size=\d+, max-age=\d+",
                },
            ),
            head(0, False, None),
        ],
    ),
    Case(
        "create-partial-records-length",
        "The server MUST record the length according to (Upload Length) if the Upload-Length "
        "or Upload-Complete: ?1 header fields are included in the request (Upload Creation)",
        [
            Step(
                "POST",
                COLLECTION,
                v(Upload_Complete="?0", Upload_Length="10"),
                DATA[:4],
                status=201,
                interims=None,  # on local disk, a progress 104 too (a part of 4 bytes)
                expect={"Upload-Complete": "\\?0", "Upload-Offset": "4", "Upload-Length": "10"},
            ),
            Step("HEAD", "{location}", v(), expect={"Upload-Offset": "4", "Upload-Length": "10"}),
        ],
    ),
    Case(
        "head",
        "A successful response to a HEAD ... MUST include the offset in the Upload-Offset "
        "header field, MUST include the Upload-Complete header field, MUST include the length "
        "in the Upload-Length header field, ... MUST indicate the limits in the Upload-Limit "
        "header field, and SHOULD include the Cache-Control header field with the value "
        "no-store (Offset Retrieval)",
        [head(3, False, 10)],
        given=v(Upload_Complete="?0", Upload_Length="10"),
        given_body=DATA[:3],
    ),
    Case(
        "append-then-complete",
        "If the Upload-Complete request header field is set to false ... the server "
        "acknowledges the appended data by sending a 2xx (Successful) response with the "
        "Upload-Complete header field set to false; set to true ... the response MUST include "
        "the Upload-Complete header field with a true value (Upload Append)",
        [
            Step(
                "PATCH",
                headers=append(0, False),
                body=DATA[:6],
                expect={"Upload-Complete": "\\?0", "Upload-Offset": "6"},
            ),
            Step("PATCH", headers=append(6, True), body=DATA[6:], status=201, expect=MADE),
            head(10, True, 10),
        ],
        given=v(Upload_Complete="?0"),
    ),
    Case(
        "complete-by-empty-append",
        "Its value is true ... [when] the request has no content. Once the request is "
        "processed by the server, the upload is complete (Upload Append, Client Behavior)",
        [
            Step("PATCH", headers=append(5, True), status=201, expect=MADE),
            head(5, True, 5),
        ],
        given=v(Upload_Complete="?0"),
        given_body=DATA[:5],
    ),
    Case(
        "complete-by-chunked-append",
        "a server is responsible for transfer decoding the message before computing the "
        "upload offset (Transfer Codings): a chunked body that completes the upload sets "
        "its length where it ends",
        [
            Step("PATCH", headers=append(0, True), body=None, status=201, expect=MADE),
            head(10, True, 10),
        ],
        given=v(Upload_Complete="?0"),
    ),
    Case(
        "mismatching-offset",
        "If the Upload-Offset request header field value does not match the current offset, "
        "the server MUST reject the request with a 409 (Conflict) status code and the "
        "Upload-Complete header field set to false. The response MUST include the correct "
        "offset in the Upload-Offset header field (Upload Append); SHOULD populate both "
        "members [expected-offset, provided-offset] (Mismatching Offset)",
        [
            Step(
                "PATCH",
                headers=append(7, False),
                body=DATA[:2],
                status=409,
                expect={"Upload-Complete": "\\?0", "Upload-Offset": "3"},
                problem=IANA + "mismatching-upload-offset",
                fields={"expected-offset": 3, "provided-offset": 7},
            ),
            head(3, False, None),
        ],
        given=v(Upload_Complete="?0"),
        given_body=DATA[:3],
    ),
    Case(
        "inconsistent-length-in-one-request",
        "If indicators (1) and (2) are both present in the same request, their indicated "
        "lengths MUST match ... inconsistent-upload-length (Upload Length)",
        [
            Step(
                "POST",
                COLLECTION,
                v(Upload_Complete="?1", Upload_Length="11"),
                DATA,
                status=400,
                expect={"Upload-Complete": "\\?0"},
                problem=IANA + "inconsistent-upload-length",
            )
        ],
    ),
    Case(
        "inconsistent-length-across-requests",
        "If multiple requests include indicators, their indicated values MUST match "
        "(Upload Length)",
        [
            Step(
                "PATCH",
                headers=append(0, False, Upload_Length="12"),
                body=DATA[:2],
                status=400,
                problem=IANA + "inconsistent-upload-length",
            ),
            Step(
                "PATCH",
                headers=append(0, True),
                body=DATA[:4],
                status=400,
                problem=IANA + "inconsistent-upload-length",
            ),
            head(0, False, 10),
        ],
        given=v(Upload_Complete="?0", **OPEN),
    ),
    Case(
        "offset-never-past-length",
        "If the length is known, the server MUST prevent the offset from exceeding the "
        "upload length by rejecting the request (Upload Append)",
        [
            Step("PATCH", headers=append(0, False), body=DATA, status=413),
            head(0, False, 5),
        ],
        given=v(Upload_Complete="?0", **SHORT),
    ),
    Case(
        "partial-upload-media-type",
        "A server applies a PATCH request with the application/partial-upload media type "
        "... by appending the patch document (Upload Append): another type is not an append",
        [
            Step(
                "PATCH",
                headers=append(0, False) | {"Content-Type": "application/octet-stream"},
                body=DATA,
                status=415,
            ),
            head(0, False, None),
        ],
        given=v(Upload_Complete="?0"),
    ),
    Case(
        "completed-upload",
        "If the upload is already complete, the server MUST NOT modify the upload resource "
        "and MUST reject the request ... completed-upload (interop 6, Upload Append); The "
        "server can choose to replay the final response ... if the request to append to "
        "the completed upload is valid (latest, Upload Append)",
        [
            Step(
                "PATCH",
                headers=append(10, False, "6"),
                body=b"x",
                status=400,
                problem=IANA + "completed-upload",
            ),
            Step("PATCH", headers=append(10, True), status=201, expect=MADE),
            head(10, True, 10),
        ],
        given=v(Upload_Complete="?1"),
        given_body=DATA,
    ),
    Case(
        "cancel",
        "Upon receiving a DELETE request, the server SHOULD deactivate the upload resource "
        "(Upload Cancellation)",
        [Step("DELETE", headers=v()), Step("HEAD", headers=v(), status=404)],
        given=v(Upload_Complete="?0"),
        given_body=DATA[:3],
    ),
    Case(
        "content-digest",
        "If the digests don't match the server SHOULD consider the transfer failed, not "
        "append the content to the upload resource, and signal the failure (Content Digests)",
        [
            Step(
                "PATCH",
                headers=append(0, False, Content_Digest=sha("sha-256", b"other")),
                body=DATA[:4],
                status=400,
                problem="https://mediagate.dev/problems/content-digest-mismatch",
            ),
            Step(
                "PATCH",
                headers=append(0, False, Content_Digest=sha("sha-256", DATA[:4])),
                body=DATA[:4],
                expect={"Upload-Offset": "4"},
            ),
        ],
        given=v(Upload_Complete="?0"),
    ),
    Case(
        "repr-digest",
        "Once the upload is completed, the server can compute the integrity digest of the "
        "representation data and compare it to the provided digest. If the digests don't "
        "match, the server SHOULD consider the upload failed (Representation Digests)",
        [
            Step(
                "POST",
                COLLECTION,
                v(Upload_Complete="?1", Repr_Digest=sha("sha-256", DATA)),
                DATA,
                status=201,
                interims=None,
                expect=MADE | {"Repr-Digest": re.escape(sha("sha-256", DATA))},
            ),
            Step(
                "POST",
                COLLECTION,
                v(Upload_Complete="?1", Repr_Digest=sha("sha-256", b"other")),
                DATA,
                status=422,
                interims=None,
                expect={"Upload-Complete": "\\?0", "Location": ".+"},
            ),
        ],
    ),
    Case(
        "progress-104s",
        "While the request content is being processed, the server SHOULD send interim "
        "responses with a 104 (Upload Resumption Supported) status code and the "
        "Upload-Offset header field set to the current offset ... These interim responses "
        "MUST NOT include the Location header field (Upload Append)",
        [
            Step(
                "PATCH",
                headers=append(0, True),
                body=BIG,
                status=201,
                interims=[
                    {"Upload-Offset": str(PART), "Location": None},
                    {"Upload-Offset": str(2 * PART), "Location": None},
                ],
                expect=MADE,
            ),
            head(len(BIG), True, len(BIG)),
        ],
        given=v(Upload_Complete="?0"),
    ),
    Case(
        "resume-after-interruption",
        "If the connection to the server is interrupted, the client might want to resume "
        "the upload ... it needs to know the amount of representation data that the server "
        "processed before the interruption. It does so by retrieving the offset ... The "
        "client can resume the upload by sending the remaining representation data "
        "(Example 1); the URI came in the 104 (Upload Creation, Client Behavior)",
        [
            Step(
                "POST",
                COLLECTION,
                v(Upload_Complete="?1", Content_Disposition='inline; filename="cut.bin"'),
                BIG,
                cut=PART + 1000,
                interims=[LOCATION_104, {"Upload-Offset": str(PART), "Location": None}],
            ),
            Step(
                "HEAD",
                "{location}",
                v(),
                retry=True,
                expect={"Upload-Offset": str(PART), "Upload-Complete": "\\?0"},
            ),
            Step(
                "PATCH",
                "{location}",
                append(PART, True),
                BIG[PART:],
                status=201,
                interims=[{"Upload-Offset": str(2 * PART)}],
                expect=MADE | {"Upload-Length": str(len(BIG))},
            ),
            Step(
                "GET", "{media_info}", status=200, fields={"filename": "cut.bin", "size": len(BIG)}
            ),
        ],
    ),
    Case(
        "interop-6",
        "The current interop version is 6 ... MUST also send a header field "
        "Upload-Draft-Interop-Version with the interop version as its value to the 104 "
        "(interop 6, Draft Version Identification)",
        [
            Step(
                "POST",
                COLLECTION,
                v("6", Upload_Complete="?0", Upload_Length="10"),
                status=201,
                interims=[LOCATION_104 | {"Upload-Draft-Interop-Version": "6"}],
                expect={"Location": ".+", "Upload-Complete": "\\?0"},
            ),
            Step(
                "PATCH",
                "{location}",
                append(0, True, "6"),
                DATA,
                status=201,
                expect=MADE | {"Upload-Offset": "10"},
            ),
        ],
    ),
]


# --- the runner ----------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["local", "s3"])
def storage(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(
    storage: str, moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServerProcess]:
    """One `mediagate serve` per storage for the module: each case has a user of its own."""
    env = {
        "MEDIAGATE_JWT_SECRET": SECRET,
        "MEDIAGATE_MAX_UPLOAD_SIZE": str(MAX_SIZE),
        "MEDIAGATE_CHUNK_SIZE": str(PART),
    }
    if storage == "s3":
        env |= {
            "USE_CLOUD_STORAGE": "true",
            "AWS_S3_BUCKET_NAME": f"mediagate-ietf-{uuid.uuid4().hex[:12]}",
            **tier_s3_env(moto_endpoint),
        }
    data_dir: Path = tmp_path_factory.mktemp(f"ietf-{storage}") / "data"
    process = ServerProcess(data_dir, env, log=data_dir.parent / "server.log")
    await process.start()
    yield process
    await process.stop()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_the_draft(server: ServerProcess, case: Case) -> None:
    auth = {"Authorization": f"Bearer {tokens.issue(SECRET.encode(), uuid.uuid4().hex, 600)}"}
    names = {"upload": "", "location": "", "media_info": ""}
    if case.given is not None:
        made = await exchange(server.port, "POST", COLLECTION, auth | case.given, case.given_body)
        assert made.final.status == 201, made.body
        names["upload"] = names["location"] = _path(made.final.headers["location"])
    for number, step in enumerate(case.steps):
        where = f"{case.name} step {number}: {step.method} {step.path}"
        path = step.path.format(**names)
        headers = auth | {k: value.format(**names) for k, value in step.headers.items()}
        answer = await exchange(server.port, step.method, path, headers, step.body, step.cut)
        for _ in range(50 if step.retry else 0):
            if answer.final.status == step.status and _holds(answer.final.headers, step.expect):
                break
            await asyncio.sleep(0.1)
            answer = await exchange(server.port, step.method, path, headers, step.body)
        if step.cut is None:
            assert answer.final.status == step.status, (where, answer.final, answer.body)
            _check(where, answer.final.headers, step.expect)
        if step.interims is not None:
            assert len(answer.interims) == len(step.interims), (where, answer.interims)
            for interim, expected in zip(answer.interims, step.interims, strict=True):
                assert interim.status == 104, where
                _check(where, interim.headers, expected)
                # Every interim and final response of a request: one Location.
                if "location" in answer.final.headers and "location" in interim.headers:
                    assert interim.headers["location"] == answer.final.headers["location"]
        if step.problem is not None:
            assert answer.final.headers["content-type"] == "application/problem+json", where
            assert json.loads(answer.body)["type"] == step.problem, (where, answer.body)
        if step.fields:
            document = json.loads(answer.body)
            assert {k: document.get(k) for k in step.fields} == step.fields, (where, document)
        for message in [*answer.interims, answer.final]:
            if "location" in message.headers:
                names["location"] = _path(message.headers["location"])
        if answer.final.headers.get("content-type", "").startswith("application/json"):
            media_id = json.loads(answer.body).get("media_id")
            if media_id:
                names["media_info"] = f"/api/v1/media/info/{media_id}"


def _holds(headers: dict[str, str], expect: dict[str, str | None]) -> bool:
    return all(
        (headers.get(name.lower()) is None)
        if pattern is None
        else re.fullmatch(pattern, headers.get(name.lower()) or "") is not None
        for name, pattern in expect.items()
    )


def _check(where: str, headers: dict[str, str], expect: dict[str, str | None]) -> None:
    for name, pattern in expect.items():
        value = headers.get(name.lower())
        if pattern is None:
            assert value is None, (where, name, value)
        else:
            assert value is not None and re.fullmatch(pattern, value), (where, name, value)


def _path(location: str) -> str:
    return "/" + location.split("/", 3)[3]
