"""tus requests made plainly through a test's `Api`, and a finished upload fetched back."""

from __future__ import annotations

from typing import Any

from support.api import Api
from support.raw_http import RawConnection, request_head

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Content-Type": "application/offset+octet-stream"}


async def create_upload(api: Api, length: int = 11, **headers: str) -> str:
    answer = await api.client.post(
        "/api/v1/tus",
        headers={**api.headers, **TUS, "Upload-Length": str(length), **headers},
    )
    assert answer.status == 201, await answer.text()
    return answer.headers["Location"].split("/api/v1/tus/")[-1]


async def patch(api: Api, upload: str, offset: int, data: bytes, **headers: str) -> Any:
    return await api.client.patch(
        f"/api/v1/tus/{upload}",
        data=data,
        headers={**api.headers, **TUS, **OCTETS, "Upload-Offset": str(offset), **headers},
    )


async def offset_of(api: Api, upload: str) -> int:
    answer = await api.client.head(f"/api/v1/tus/{upload}", headers={**api.headers, **TUS})
    assert answer.status == 200
    return int(answer.headers["Upload-Offset"])


async def fetch_media(api: Api, filename: str) -> tuple[dict[str, Any], bytes]:
    """The finished upload named `filename` through the media API: its info and its bytes."""
    listed = await (await api.client.get("/api/v1/media", headers=api.headers)).json()
    found = [media for media in listed["items"] if media["filename"] == filename]
    assert len(found) == 1, listed
    info = found[0]
    stream = await api.client.get(
        f"/api/v1/media/stream/{info['media_id']}", headers=api.headers, allow_redirects=False
    )
    if stream.status == 302:
        async with api.client.session.get(stream.headers["Location"]) as direct:
            return info, await direct.read()
    assert stream.status == 200
    return info, await stream.read()


async def stall_patch(api: Api, upload: str, offset: int, body: bytes, sent: int) -> RawConnection:
    """A PATCH declaring all of `body` that sends its first `sent` bytes, then nothing."""
    connection = await RawConnection.open(api.client)
    head = request_head(
        "PATCH",
        f"/api/v1/tus/{upload}",
        {**api.headers, **TUS, **OCTETS, "Upload-Offset": str(offset)},
        content_length=len(body),
    )
    await connection.send(head, body[:sent], pause=0.3)
    return connection
