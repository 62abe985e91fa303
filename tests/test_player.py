"""A real player: ffprobe and ffmpeg seek into uploaded H.264 through the signed stream URL."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
    reason="ffmpeg/ffprobe not installed (CI installs Debian's ffmpeg)",
)


async def run(*command: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(120):
        output, _ = await process.communicate()
    return process.returncode or 0, output.decode(errors="replace")


MOVIE_COMMAND = (
    "ffmpeg -v error -f lavfi -i testsrc=duration=60:size=320x240:rate=10 -c:v libx264 "
    "-preset ultrafast -g 10 -pix_fmt yuv420p -movflags +faststart"
).split()


@pytest.fixture(scope="module")
def movie(tmp_path_factory) -> bytes:
    """A 60-second H.264 MP4, keyframe every second, made with ffmpeg's test source."""
    path = tmp_path_factory.mktemp("movie") / "clip.mp4"
    subprocess.run([*MOVIE_COMMAND, str(path)], check=True, timeout=120)
    return path.read_bytes()


async def upload(api, data: bytes) -> dict:
    session = await (await api.initiate(filename="clip.mp4", size=len(data))).json()
    assert session["total_chunks"] == 1
    assert (await api.put_chunk(session["session_id"], 0, data)).status == 200
    done = await api.complete(session["session_id"])
    assert done.status == 201
    return await done.json()


async def assert_playable_and_seekable(url: str, tmp_path: Path) -> None:
    code, output = await run(
        "ffprobe",
        "-v",
        "error",
        "-show_entries",
        "format=duration:stream=codec_name",
        "-of",
        "json",
        url,
    )
    assert code == 0, output
    probed = json.loads(output)
    assert probed["streams"][0]["codec_name"] == "h264"
    assert float(probed["format"]["duration"]) == pytest.approx(60, abs=0.5)

    frame = tmp_path / "frame.png"
    code, output = await run(
        "ffmpeg", "-v", "error", "-ss", "45", "-i", url, "-frames:v", "1", "-y", str(frame)
    )
    assert code == 0, output
    assert frame.stat().st_size > 0


async def test_ffmpeg_seeks_in_local_media(local_api, movie, tmp_path):
    media = await upload(local_api, movie)
    assert media["info"]["content_type"] == "video/mp4"
    await assert_playable_and_seekable(media["stream_url"], tmp_path)


async def test_ffmpeg_seeks_through_the_s3_redirect(s3_api, movie, tmp_path):
    media = await upload(s3_api, movie)
    assert media["info"]["storage"] == "s3"
    await assert_playable_and_seekable(media["stream_url"], tmp_path)
