"""A chunk's body as clients send it: raw or multipart, in any TCP split, well-formed or not."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from support.api import MiB, chunks_of
from support.raw_http import RawConnection, form_body, new_boundary, request_head


async def open_session(api, size: int, chunk_size: int = 5 * MiB) -> dict:
    answer = await api.initiate(filename="clip.bin", size=size, chunk_size=chunk_size)
    assert answer.status == 201, await answer.text()
    return await answer.json()


def chunk_path(session: dict, number: int) -> str:
    return f"/api/v1/media/upload/{session['session_id']}/chunk/{number}"


async def send_form(api, session: dict, number: int, body: bytes, boundary: str, *, pieces: int):
    """POST `body` as multipart/form-data, in `pieces` separate TCP writes; the answer."""
    connection = await RawConnection.open(api.client)
    head = request_head(
        "POST",
        chunk_path(session, number),
        {**api.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        content_length=len(body),
    )
    step = -(-len(body) // pieces)
    try:
        await connection.send(head, *(body[i : i + step] for i in range(0, len(body), step)))
        return await connection.answer()
    finally:
        connection.close()


async def fetch_media(api, media: dict) -> bytes:
    link = URL(media["stream_url"])
    answer = await api.client.get(link.path_qs)
    assert answer.status == 200
    return await answer.read()


async def complete(api, session: dict) -> dict:
    answer = await api.complete(session["session_id"])
    assert answer.status == 201, await answer.text()
    return await answer.json()


@pytest.mark.parametrize("pieces", [7, 12, 29])
async def test_an_overlong_form_part_never_reaches_the_acknowledged_neighbour(local_api, pieces):
    data = random.Random(1).randbytes(5 * MiB + 10)
    session = await open_session(local_api, len(data))
    first, tail = chunks_of(data, 5 * MiB)
    assert (await local_api.put_chunk(session["session_id"], 1, tail)).status == 200

    boundary = new_boundary()
    overlong = form_body(boundary, ("file", first + os.urandom(3 * MiB)))
    status, problem = await send_form(local_api, session, 0, overlong, boundary, pieces=pieces)
    assert (status, problem["type"].rsplit("/", 1)[1]) == (400, "chunk-length-mismatch")

    right = form_body(boundary, ("file", first))
    status, _ = await send_form(local_api, session, 0, right, boundary, pieces=7)
    assert status == 200
    assert await fetch_media(local_api, await complete(local_api, session)) == data


@pytest.mark.parametrize(
    ("size", "pieces"),
    [(10, 1), (10, 3), (1000, 1), (1000, 2), (1000, 37)],
    ids=["10-bytes", "10-bytes-split", "1000-bytes", "1000-bytes-halves", "1000-bytes-37-pieces"],
)
async def test_small_form_chunks_arrive_in_any_split(local_api, size, pieces):
    data = os.urandom(size)
    session = await open_session(local_api, size)
    boundary = new_boundary()
    status, answer = await send_form(
        local_api, session, 0, form_body(boundary, ("file", data)), boundary, pieces=pieces
    )
    assert status == 200, answer
    assert await fetch_media(local_api, await complete(local_api, session)) == data


async def test_last_ten_bytes_arriving_on_their_own(local_api):
    data = os.urandom(1000)
    session = await open_session(local_api, len(data))
    boundary = new_boundary()
    body = form_body(boundary, ("file", data))
    connection = await RawConnection.open(local_api.client)
    head = request_head(
        "POST",
        chunk_path(session, 0),
        {**local_api.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        content_length=len(body),
    )
    end_of_data = body.index(data) + len(data)
    await connection.send(head, body[: end_of_data - 10], body[end_of_data - 10 :], pause=0.1)
    status, answer = await connection.answer()
    connection.close()
    assert status == 200, answer


async def test_curl_form_upload_of_a_small_file(local_api, tmp_path: Path):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    data = os.urandom(10)
    (tmp_path / "small.bin").write_bytes(data)
    session = await open_session(local_api, len(data))
    url = f"http://{local_api.client.host}:{local_api.client.port}{chunk_path(session, 0)}"
    process = await asyncio.create_subprocess_exec(
        curl,
        "-sS",
        "-o",
        "-",
        "-w",
        "%{http_code}",
        "-H",
        f"Authorization: {local_api.headers['Authorization']}",
        "-F",
        f"file=@{tmp_path / 'small.bin'}",
        url,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    assert out.endswith(b"200"), out
    assert await fetch_media(local_api, await complete(local_api, session)) == data


def _unclosed(boundary: str, data: bytes) -> bytes:
    return form_body(boundary, ("file", data)).rsplit(b"\r\n--", 1)[0]


def _base64(boundary: str, data: bytes) -> bytes:
    return form_body(boundary, ("file", data), part_headers={"Content-Transfer-Encoding": "base64"})


def _no_file_field(boundary: str, data: bytes) -> bytes:
    return form_body(boundary, ("note", b"text")).replace(b'; filename="note.bin"', b"")


def _headers_cut_short(boundary: str, data: bytes) -> bytes:
    return f'--{boundary}\r\nContent-Disposition: form-data; name="file"'.encode()


def _control_character_in_a_part_name(boundary: str, data: bytes) -> bytes:
    note = f'--{boundary}\r\nContent-Disposition: form-data; name="a\x18b"\r\n\r\nx\r\n'
    return note.encode() + form_body(boundary, ("file", data))


def _no_part_at_all(boundary: str, data: bytes) -> bytes:
    return f"--{boundary}--\r\n".encode()


MALFORMED_FORMS = {
    "longer-than-the-chunk": (
        lambda b, d: form_body(b, ("file", d + b"x" * 100)),
        "chunk-length-mismatch",
    ),
    "shorter-than-the-chunk": (lambda b, d: form_body(b, ("file", d[:-1])), "chunk-incomplete"),
    "no-closing-boundary": (_unclosed, "bad-request"),
    "base64-part": (_base64, "bad-request"),
    "second-file-field": (lambda b, d: form_body(b, ("file", d), ("data", d)), "bad-request"),
    "no-file-field": (_no_file_field, "bad-request"),
    "headers-cut-short": (_headers_cut_short, "bad-request"),
    "control-character-in-a-part-name": (_control_character_in_a_part_name, "bad-request"),
    "no-part-at-all": (_no_part_at_all, "bad-request"),
}


@pytest.mark.parametrize(
    ("make_body", "code"), MALFORMED_FORMS.values(), ids=MALFORMED_FORMS.keys()
)
@pytest.mark.parametrize("pieces", [1, 5])
async def test_malformed_form_bodies_are_4xx_problems(local_api, make_body, code, pieces):
    data = os.urandom(1000)
    session = await open_session(local_api, len(data))
    boundary = new_boundary()
    status, problem = await send_form(
        local_api, session, 0, make_body(boundary, data), boundary, pieces=pieces
    )
    assert 400 <= status < 500, problem
    assert problem["type"].rsplit("/", 1)[1] == code
    assert "assert" not in problem["detail"].lower()
    listed = await (await local_api.status(session["session_id"])).json()
    assert listed["received"] == []
    # and a good retry still goes through on a new connection
    status, _ = await send_form(
        local_api, session, 0, form_body(boundary, ("file", data)), boundary, pieces=pieces
    )
    assert status == 200
    assert await fetch_media(local_api, await complete(local_api, session)) == data


async def test_a_form_with_other_fields_around_the_file_is_fine(local_api):
    data = os.urandom(2000)
    session = await open_session(local_api, len(data))
    form = aiohttp.FormData()
    form.add_field("note", "before")
    form.add_field("file", data, filename="blob", content_type="application/octet-stream")
    form.add_field("after", "too")
    answer = await local_api.client.post(
        chunk_path(session, 0), data=form, headers=local_api.headers
    )
    assert answer.status == 200, await answer.text()
    assert await fetch_media(local_api, await complete(local_api, session)) == data


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data", 'multipart/form-data; boundary=""', "multipart/form-data; boundary=x"],
)
async def test_a_form_without_a_usable_boundary_is_400(local_api, content_type):
    session = await open_session(local_api, 10)
    answer = await local_api.client.post(
        chunk_path(session, 0),
        data=b"0123456789",
        headers={**local_api.headers, "Content-Type": content_type},
    )
    assert answer.status == 400, await answer.text()
