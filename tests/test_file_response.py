"""send_file through a real aiohttp server, every case with and without sendfile."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import logging
import os
import random
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mediagate.disposition import content_disposition
from mediagate.web import file_response
from mediagate.web.file_response import send_file

ETAG = '"v1"'
LAST_MODIFIED = 1_700_000_000
LM_DATE = formatdate(LAST_MODIFIED, usegmt=True)
CACHE_CONTROL = "private, max-age=3600"

FILE_SIZES = {
    "video.mp4": 10_000,
    "empty.mp4": 0,
    "one.mp4": 1,
    # Larger than a read chunk and than one sendfile() call moves.
    "large.mp4": 5 * 1024 * 1024 + 123,
}
# Large enough that the body cannot fit in the socket buffers, so a client that
# hangs up after the headers does so while the server is still sending.
DISCONNECT_FILE_SIZE = 64 * 1024 * 1024

ROOT = web.AppKey("root", Path)
OUTCOMES = web.AppKey("outcomes", list)  # how each handler call ended
HANDLED = web.AppKey("handled", asyncio.Event)


@dataclass
class Server:
    client: TestClient[Any, Any]
    root: Path
    contents: dict[str, bytes] = field(repr=False)
    sendfile_calls: list[int]
    use_sendfile: bool
    outcomes: list[str]


@functools.cache
def file_contents() -> dict[str, bytes]:
    generator = random.Random(1234)
    return {name: generator.randbytes(size) for name, size in FILE_SIZES.items()}


def make_files(root: Path) -> dict[str, bytes]:
    contents = file_contents()
    for name, content in contents.items():
        (root / name).write_bytes(content)
    with open(root / "huge.mp4", "wb") as huge:
        huge.truncate(DISCONNECT_FILE_SIZE)
    return contents


def _disposition(filename: str | None) -> dict[str, str] | None:
    return {"Content-Disposition": content_disposition(filename)} if filename else None


async def serve(request: web.Request) -> web.StreamResponse:
    try:
        response = await send_file(
            request,
            request.app[ROOT] / request.match_info["name"],
            content_type=request.query.get("type", "video/mp4"),
            etag=ETAG,
            last_modified=LAST_MODIFIED,
            cache_control=CACHE_CONTROL,
            headers=_disposition(request.query.get("filename")),
        )
    except FileNotFoundError:
        outcome = "not found"
        raise web.HTTPNotFound() from None
    except BaseException as error:
        outcome = repr(error)
        raise
    else:
        outcome = "sent"
        return response
    finally:
        request.app[OUTCOMES].append(outcome)
        request.app[HANDLED].set()


def make_app(root: Path) -> web.Application:
    app = web.Application()
    app[ROOT] = root
    app[OUTCOMES] = []
    app[HANDLED] = asyncio.Event()
    app.router.add_get("/files/{name}", serve)
    return app


@pytest.fixture(params=[True, False], ids=["sendfile", "copy"])
async def server(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    aiohttp_client: Callable[[web.Application], Awaitable[TestClient[Any, Any]]],
) -> Server:
    use_sendfile: bool = request.param
    monkeypatch.setattr(file_response, "USE_SENDFILE", use_sendfile)
    sendfile_calls = count_sendfile_calls(monkeypatch)
    app = make_app(tmp_path)
    contents = make_files(tmp_path)
    client = await aiohttp_client(app)
    return Server(client, tmp_path, contents, sendfile_calls, use_sendfile, app[OUTCOMES])


def count_sendfile_calls(monkeypatch: pytest.MonkeyPatch, cap: int | None = None) -> list[int]:
    """Record every sendfile(2), ours and asyncio's; optionally send at most `cap` bytes each."""
    calls: list[int] = []
    real_sendfile = os.sendfile

    def counting_sendfile(out_fd: int, in_fd: int, offset: int, count: int) -> int:
        calls.append(count)
        return real_sendfile(out_fd, in_fd, offset, min(count, cap or count))

    monkeypatch.setattr(os, "sendfile", counting_sendfile)
    return calls


@dataclass(frozen=True)
class Case:
    id: str
    headers: dict[str, str]
    status: int
    body: tuple[int, int] | None = None  # the file slice expected as the body
    content_range: str | None = None
    parts: tuple[tuple[int, int], ...] = ()  # multipart/byteranges slices, in order
    file: str = "video.mp4"
    method: str = "GET"


LARGE = FILE_SIZES["large.mp4"]

CASES = [
    Case("full GET", {}, 200, body=(0, 10_000)),
    Case("first 500", {"Range": "bytes=0-499"}, 206, (0, 500), "bytes 0-499/10000"),
    Case("open range", {"Range": "bytes=9500-"}, 206, (9500, 10_000), "bytes 9500-9999/10000"),
    Case("suffix", {"Range": "bytes=-300"}, 206, (9700, 10_000), "bytes 9700-9999/10000"),
    Case("one byte", {"Range": "bytes=1234-1234"}, 206, (1234, 1235), "bytes 1234-1234/10000"),
    Case(
        "end clamped", {"Range": "bytes=9000-20000"}, 206, (9000, 10_000), "bytes 9000-9999/10000"
    ),
    Case(
        "overflowing number clamps",
        {"Range": "bytes=0-99999999999999999999"},
        206,
        (0, 10_000),
        "bytes 0-9999/10000",
    ),
    Case("-0 is 416", {"Range": "bytes=-0"}, 416, content_range="bytes */10000"),
    Case("start at EOF is 416", {"Range": "bytes=10000-"}, 416, content_range="bytes */10000"),
    Case("all unsatisfiable", {"Range": "bytes=20000-,-0"}, 416, content_range="bytes */10000"),
    Case("invalid Range ignored", {"Range": "bytes=5-1"}, 200, body=(0, 10_000)),
    Case("garbage Range ignored", {"Range": "bytes=abc"}, 200, body=(0, 10_000)),
    Case("unknown unit ignored", {"Range": "items=0-1"}, 200, body=(0, 10_000)),
    Case(
        "two ranges: multipart",
        {"Range": "bytes=0-99,5000-5099"},
        206,
        parts=((0, 100), (5000, 5100)),
    ),
    Case(
        "three ranges, request order, suffix",
        {"Range": "bytes=9000-9009,-5,10-19"},
        206,
        parts=((9000, 9010), (9995, 10_000), (10, 20)),
    ),
    Case(
        "overlapping ranges coalesce to one 206",
        {"Range": "bytes=0-99,50-199"},
        206,
        (0, 200),
        "bytes 0-199/10000",
    ),
    Case(
        "range-count cap: whole file",
        {"Range": "bytes=" + ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(17))},
        200,
        body=(0, 10_000),
    ),
    Case("HEAD", {}, 200, method="HEAD"),
    Case("HEAD ignores Range", {"Range": "bytes=0-499"}, 200, method="HEAD"),
    Case(
        "If-Range same etag",
        {"If-Range": ETAG, "Range": "bytes=0-9"},
        206,
        (0, 10),
        "bytes 0-9/10000",
    ),
    Case("If-Range other etag", {"If-Range": '"v0"', "Range": "bytes=0-9"}, 200, body=(0, 10_000)),
    Case(
        "If-Range exact date",
        {"If-Range": LM_DATE, "Range": "bytes=0-9"},
        206,
        (0, 10),
        "bytes 0-9/10000",
    ),
    Case(
        "If-Range later date is not exact",
        {"If-Range": formatdate(LAST_MODIFIED + 60, usegmt=True), "Range": "bytes=0-9"},
        200,
        body=(0, 10_000),
    ),
    Case("If-None-Match", {"If-None-Match": ETAG}, 304),
    Case("If-None-Match on HEAD", {"If-None-Match": ETAG}, 304, method="HEAD"),
    Case("If-None-Match beats Range", {"If-None-Match": ETAG, "Range": "bytes=0-9"}, 304),
    Case("If-Modified-Since", {"If-Modified-Since": LM_DATE}, 304),
    Case(
        "If-Modified-Since ignored with If-None-Match",
        {"If-None-Match": '"v0"', "If-Modified-Since": LM_DATE},
        200,
        body=(0, 10_000),
    ),
    Case("If-Match failing", {"If-Match": '"v0"'}, 412),
    Case("If-Match failing on a Range", {"If-Match": '"v0"', "Range": "bytes=0-9"}, 412),
    Case("empty file", {}, 200, body=(0, 0), file="empty.mp4"),
    Case(
        "empty file, bytes=0-",
        {"Range": "bytes=0-"},
        416,
        content_range="bytes */0",
        file="empty.mp4",
    ),
    Case("empty file, suffix", {"Range": "bytes=-10"}, 200, body=(0, 0), file="empty.mp4"),
    Case("1-byte file", {}, 200, body=(0, 1), file="one.mp4"),
    Case("1-byte file, range", {"Range": "bytes=0-"}, 206, (0, 1), "bytes 0-0/1", file="one.mp4"),
    Case(
        "1-byte file, past EOF",
        {"Range": "bytes=1-"},
        416,
        content_range="bytes */1",
        file="one.mp4",
    ),
    Case("large file", {}, 200, body=(0, LARGE), file="large.mp4"),
    Case(
        "large range across chunks",
        {"Range": "bytes=100000-3999999"},
        206,
        (100_000, 4_000_000),
        f"bytes 100000-3999999/{LARGE}",
        file="large.mp4",
    ),
    Case(
        "large multipart",
        {"Range": "bytes=-1048576,0-1048575"},
        206,
        parts=((LARGE - 1_048_576, LARGE), (0, 1_048_576)),
        file="large.mp4",
    ),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
async def test_response(server: Server, case: Case) -> None:
    content = server.contents[case.file]
    async with server.client.request(
        case.method, f"/files/{case.file}", headers=case.headers
    ) as response:
        body = await response.read()
        headers = response.headers

    assert response.status == case.status
    assert headers.get("Content-Range") == case.content_range
    if case.status in (200, 206):
        assert headers["Accept-Ranges"] == "bytes"
        assert headers["ETag"] == ETAG
        assert headers["Last-Modified"] == LM_DATE
        assert headers["Cache-Control"] == CACHE_CONTROL

    if case.method == "HEAD":
        assert body == b""
        if case.status == 200:
            assert headers["Content-Length"] == str(len(content))
            assert headers["Content-Type"] == "video/mp4"
    elif case.parts:
        assert headers["Content-Length"] == str(len(body))
        assert_byteranges(body, headers["Content-Type"], content, case.parts)
    elif case.body is not None:
        start, stop = case.body
        assert headers["Content-Type"] == "video/mp4"
        assert headers["Content-Length"] == str(stop - start)
        assert body == content[start:stop]
    if case.status == 304:
        assert body == b""
        assert headers["ETag"] == ETAG
        assert headers["Last-Modified"] == LM_DATE
        assert headers["Cache-Control"] == CACHE_CONTROL
    if case.status in (412, 416) and case.method == "GET":
        assert headers["Content-Type"] == "application/problem+json"
        assert json.loads(body)["status"] == case.status

    file_bytes_sent = case.method == "GET" and (case.parts or (case.body and case.body[1] > 0))
    assert bool(server.sendfile_calls) == bool(server.use_sendfile and file_bytes_sent)


def assert_byteranges(
    body: bytes, content_type: str, content: bytes, expected: tuple[tuple[int, int], ...]
) -> None:
    """Parse a multipart/byteranges body as a player would and check every part."""
    media_type, _, parameter = content_type.partition(";")
    assert media_type == "multipart/byteranges"
    name, _, boundary = parameter.strip().partition("=")
    assert name == "boundary" and boundary
    assert body.startswith(f"--{boundary}\r\n".encode())
    assert body.endswith(f"\r\n--{boundary}--\r\n".encode())
    inner = body[len(f"--{boundary}") : -len(f"\r\n--{boundary}--\r\n")]
    chunks = inner.split(f"\r\n--{boundary}".encode())
    assert len(chunks) == len(expected)
    for chunk, (start, stop) in zip(chunks, expected, strict=True):
        head, separator, data = chunk.partition(b"\r\n\r\n")
        assert separator
        lines = head.decode().split("\r\n")
        assert lines[0] == ""  # the CRLF after the boundary line
        part_headers = dict(line.split(": ", 1) for line in lines[1:])
        assert part_headers == {
            "Content-Type": "video/mp4",
            "Content-Range": f"bytes {start}-{stop - 1}/{len(content)}",
        }
        assert data == content[start:stop]


async def test_range_larger_than_one_sendfile_call(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    aiohttp_client: Callable[[web.Application], Awaitable[TestClient[Any, Any]]],
) -> None:
    """What one sendfile(2) cannot take, loop.sendfile() finishes, in order."""
    monkeypatch.setattr(file_response, "USE_SENDFILE", True)
    sendfile_calls = count_sendfile_calls(monkeypatch, cap=64 * 1024)
    loop = asyncio.get_running_loop()
    loop_sendfile_counts: list[int] = []
    real_loop_sendfile = loop.sendfile

    async def counting_loop_sendfile(transport: Any, file: Any, offset: int, count: int) -> int:
        loop_sendfile_counts.append(count)
        return await real_loop_sendfile(transport, file, offset, count)

    monkeypatch.setattr(loop, "sendfile", counting_loop_sendfile)
    contents = make_files(tmp_path)
    client = await aiohttp_client(make_app(tmp_path))

    response = await client.get("/files/large.mp4", headers={"Range": "bytes=1000-"})
    assert response.status == 206
    assert await response.read() == contents["large.mp4"][1000:]
    assert sendfile_calls[0] == LARGE - 1000
    assert loop_sendfile_counts == [LARGE - 1000 - 64 * 1024]


async def test_file_deleted_while_streaming_is_sent_in_full(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleting media does not cut off a player already streaming it, and it gets closed."""
    real_open = file_response._open_regular_file
    opened: list[io.FileIO] = []

    def open_then_delete(path: Path) -> tuple[io.FileIO, int]:
        file, size = real_open(path)
        opened.append(file)
        path.unlink()
        return file, size

    monkeypatch.setattr(file_response, "_open_regular_file", open_then_delete)
    response = await server.client.get("/files/large.mp4")
    assert response.status == 200
    assert await response.read() == server.contents["large.mp4"]

    async with asyncio.timeout(5):
        await asyncio.gather(*file_response._closing)  # closing the last link: worker thread
    assert opened[0].closed


def self_signed_server_context(directory: Path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    certificate_path, key_path = directory / "cert.pem", directory / "key.pem"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate_path, key_path)
    return context


async def test_tls_bodies_are_intact_and_never_raw_sendfile(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
) -> None:
    """Over TLS the socket carries ciphertext: the file must go through the TLS layer."""
    pytest.importorskip("cryptography")
    monkeypatch.setattr(file_response, "USE_SENDFILE", True)
    sendfile_calls = count_sendfile_calls(monkeypatch)
    contents = make_files(tmp_path)
    tls_server = TestServer(make_app(tmp_path))
    await tls_server.start_server(ssl=self_signed_server_context(tmp_path))
    client = await aiohttp_client(tls_server, connector=aiohttp.TCPConnector(ssl=False))
    assert client.make_url("/").scheme == "https"

    whole = await client.get("/files/large.mp4")
    assert await whole.read() == contents["large.mp4"]
    part = await client.get("/files/video.mp4", headers={"Range": "bytes=100-199"})
    assert part.status == 206
    assert await part.read() == contents["video.mp4"][100:200]
    parts = await client.get("/files/video.mp4", headers={"Range": "bytes=0-9,-10"})
    assert_byteranges(
        await parts.read(),
        parts.headers["Content-Type"],
        contents["video.mp4"],
        ((0, 10), (9990, 10_000)),
    )
    assert sendfile_calls == []


async def test_missing_file_is_not_found(server: Server) -> None:
    response = await server.client.get("/files/nothing.mp4")
    assert response.status == 404
    assert server.outcomes == ["not found"]


async def test_directory_is_not_found(server: Server) -> None:
    (server.root / "folder").mkdir()
    response = await server.client.get("/files/folder")
    assert response.status == 404
    assert server.outcomes == ["not found"]


async def test_content_disposition_offers_the_name(server: Server) -> None:
    name = 'café "clip" 100%.mp4'
    response = await server.client.get("/files/video.mp4", params={"filename": name})
    assert response.status == 200
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith('inline; filename="caf_ _clip_ 100_.mp4"; ')
    assert unquote(disposition.split("filename*=UTF-8''")[1]) == name


async def test_no_header_injection_through_name_or_type(server: Server) -> None:
    response = await server.client.get(
        "/files/video.mp4",
        params={"filename": "a\r\nX-Evil: 1", "type": "video/mp4\r\nX-Evil: 1"},
    )
    assert response.status == 200
    assert "X-Evil" not in response.headers
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert await response.read() == server.contents["video.mp4"]


@pytest.mark.parametrize("handler_cancellation", [False, True], ids=["run_app", "cancelling"])
async def test_client_disconnect_mid_body_leaves_server_healthy(
    server: Server, caplog: pytest.LogCaptureFixture, handler_cancellation: bool
) -> None:
    """A player that hangs up mid-body costs no traceback and no broken server.

    Tried with aiohttp's default (`web.run_app`: the handler runs on and meets the
    closed socket) and with handler cancellation (the test server's setting).
    """
    caplog.set_level(logging.DEBUG)
    app = make_app(server.root)
    runner = web.AppRunner(app, handler_cancellation=handler_cancellation)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /files/huge.mp4 HTTP/1.1\r\nHost: test\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        await reader.readexactly(100_000)
        # Closing with unread data makes the kernel reset the connection.
        writer.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
        writer.close()

        async with asyncio.timeout(10):
            await app[HANDLED].wait()
        expected = {"sent", "CancelledError()"} if handler_cancellation else {"sent"}
        assert app[OUTCOMES][0] in expected
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]

        async with aiohttp.ClientSession() as session:
            url = f"http://{host}:{port}/files/video.mp4"
            async with session.get(url, headers={"Range": "bytes=-10"}) as response:
                assert response.status == 206
                assert await response.read() == server.contents["video.mp4"][-10:]
    finally:
        await runner.cleanup()


async def test_file_shorter_than_promised_ends_the_connection(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the file shrinks after its size was taken, the client sees a cut, not a hang."""
    real_open = file_response._open_regular_file

    def open_then_shrink(path: Path) -> tuple[Any, int]:
        file, size = real_open(path)
        os.truncate(path, size // 2)
        return file, size

    monkeypatch.setattr(file_response, "_open_regular_file", open_then_shrink)
    async with asyncio.timeout(10):
        response = await server.client.get("/files/large.mp4")
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()

    monkeypatch.setattr(file_response, "_open_regular_file", real_open)
    response = await server.client.get("/files/video.mp4")
    assert await response.read() == server.contents["video.mp4"]
