"""Probing finished media: facts, faststart, posters, limits and policy, on real files
made by ffmpeg (a 2-second 160x120 clip is a few KiB)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from urllib.parse import urlsplit

import pytest

from mediagate.core.faststart import Box, is_faststart, parse_box
from mediagate.core.media_policy import MediaPolicy
from mediagate.core.probe import (
    Limits,
    ProbeFailed,
    Source,
    facts_of,
    ffprobe_command,
    poster_offset,
    run_limited,
)
from mediagate.models import MediaFacts, MediaKind, VideoFacts
from mediagate.storage.base import Route
from support.api import make_settings
from support.forward_proxy import EGRESS_NAME, ForwardProxy

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
    reason="ffmpeg/ffprobe not installed (CI installs Debian's ffmpeg)",
)

CLIP = "-f lavfi -i testsrc=duration=2:size=160x120:rate=10"
TONE = "-f lavfi -i sine=duration=2"
RECIPES = {
    "faststart.mp4": f"{CLIP} {TONE} -c:v libx264 -preset ultrafast -pix_fmt yuv420p "
    "-c:a aac -shortest -movflags +faststart",
    "moov-last.mp4": f"{CLIP} {TONE} -c:v libx264 -preset ultrafast -pix_fmt yuv420p "
    "-c:a aac -shortest",
    "clip.webm": f"{CLIP} {TONE} -c:v libvpx-vp9 -deadline realtime -c:a libopus -shortest",
    "tone.mp3": f"{TONE} -c:a libmp3lame",
    "still.png": "-f lavfi -i testsrc=size=160x120 -frames:v 1",
}


LARGE = 12 * 1024 * 1024


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("media")
    made = {}
    for name, recipe in RECIPES.items():
        target = folder / name
        subprocess.run(["ffmpeg", "-v", "error", *recipe.split(), str(target)], check=True)
        made[name] = target.read_bytes()
    # A larger faststart MP4 (the same frames again and again, copied: quick to make),
    # whose S3 probe must read a small part of it.
    large = folder / "large.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-stream_loop",
            "-1",
            "-i",
            str(folder / "faststart.mp4"),
            "-c",
            "copy",
            "-fs",
            str(LARGE),
            "-movflags",
            "+faststart",
            str(large),
        ],
        check=True,
    )
    made["large.mp4"] = large.read_bytes()
    made["truncated.mp4"] = made["moov-last.mp4"][: len(made["moov-last.mp4"]) // 2]
    made["random.bin"] = os.urandom(20_000)
    # An MP4's first box, then noise.
    made["claims.mp4"] = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + os.urandom(9_000)
    return made


# -- faststart: the top-level boxes, read a header at a time -------------------------------


def box(kind: bytes, size: int) -> bytes:
    return size.to_bytes(4, "big") + kind + b"\x00" * (size - 8)


@pytest.mark.parametrize(
    ("header", "parsed"),
    [
        (b"\x00\x00\x00\x18ftypisom", Box("ftyp", 24)),
        (b"\x00\x00\x00\x00mdat", Box("mdat", None)),  # to the end of the file
        (b"\x00\x00\x00\x01mdat" + (2**33).to_bytes(8, "big"), Box("mdat", 2**33)),
        (b"\x00\x00\x00\x01mdat" + (8).to_bytes(8, "big"), None),  # 64-bit size too small
        (b"\x00\x00\x00\x01mdat", None),  # 64-bit size missing
        (b"\x00\x00\x00\x04moov", None),  # smaller than its header
        (b"\x00\x00\x00\x10mo\x00v", None),  # not a four-character code
        (b"\x00\x00\x00", None),
    ],
)
def test_parse_box(header: bytes, parsed: Box | None) -> None:
    assert parse_box(header) == parsed


@pytest.mark.parametrize(
    ("layout", "faststart"),
    [
        (box(b"ftyp", 24) + box(b"moov", 100) + box(b"mdat", 500), True),
        (box(b"ftyp", 24) + box(b"mdat", 500) + box(b"moov", 100), False),
        (box(b"ftyp", 24) + box(b"free", 8) + box(b"wide", 8) + box(b"moov", 40), True),
        (box(b"ftyp", 24) + b"\x00\x00\x00\x00mdat" + b"\x00" * 100, False),
        (box(b"ftyp", 24) + box(b"free", 8), None),  # ends before either
        (box(b"ftyp", 24) + b"\x00\x00\x10\x00moov", None),  # the box runs past the end
        (box(b"ftyp", 24) + box(b"free", 8) * 40 + box(b"moov", 16), None),  # too many boxes
        (b"\x1aE\xdf\xa3" + b"\x00" * 60, None),  # a WebM's first bytes
    ],
)
async def test_faststart_walks_the_top_level_boxes(layout: bytes, faststart: bool | None) -> None:
    reads = []

    async def read(offset: int, length: int) -> bytes:
        reads.append(length)
        return layout[offset : offset + length]

    assert await is_faststart(read, len(layout)) is faststart
    assert all(length <= 16 for length in reads)


# -- ffprobe's JSON into facts -------------------------------------------------------------

VIDEO = {"codec_type": "video", "codec_name": "h264", "width": 1920, "height": 1080}


@pytest.mark.parametrize(
    ("streams", "container", "kind", "video"),
    [
        (
            [{**VIDEO, "avg_frame_rate": "30000/1001"}],
            "mov,mp4,m4a,3gp,3g2,mj2",
            MediaKind.VIDEO,
            VideoFacts(codec="h264", width=1920, height=1080, fps=29.97, rotation=0),
        ),
        (  # a phone's portrait video: the display matrix turns it -90 (counter-clockwise)
            [
                {
                    **VIDEO,
                    "avg_frame_rate": "0/0",
                    "r_frame_rate": "25/1",
                    "side_data_list": [{"side_data_type": "Display Matrix", "rotation": -90}],
                }
            ],
            "mov,mp4,m4a,3gp,3g2,mj2",
            MediaKind.VIDEO,
            VideoFacts(codec="h264", width=1920, height=1080, fps=25.0, rotation=90),
        ),
        (  # older ffprobe: the rotate tag
            [{**VIDEO, "tags": {"rotate": "180"}}],
            "mov,mp4,m4a,3gp,3g2,mj2",
            MediaKind.VIDEO,
            VideoFacts(codec="h264", width=1920, height=1080, fps=None, rotation=180),
        ),
        (  # an MP3's cover art is no video
            [
                {"codec_type": "audio", "codec_name": "mp3", "channels": 2, "sample_rate": "44100"},
                {**VIDEO, "codec_name": "mjpeg", "disposition": {"attached_pic": 1}},
            ],
            "mp3",
            MediaKind.AUDIO,
            None,
        ),
        (
            [{**VIDEO, "codec_name": "png", "width": 16, "height": 16}],
            "png_pipe",
            MediaKind.IMAGE,
            VideoFacts(codec="png", width=16, height=16, fps=None, rotation=0),
        ),
    ],
)
def test_facts_of(streams, container, kind, video) -> None:
    facts = facts_of(
        {
            "streams": streams,
            "format": {"format_name": container, "duration": "2.5", "bit_rate": "1000"},
        }
    )
    assert (facts.kind, facts.video, facts.container) == (kind, video, container)
    assert (facts.duration_s, facts.bitrate) == (2.5, 1000)


@pytest.mark.parametrize(
    "probed",
    [
        {},
        {"format": {"format_name": "mp3"}, "streams": []},
        {"format": {"format_name": "srt"}, "streams": [{"codec_type": "subtitle"}]},
    ],
)
def test_no_audio_or_video_is_a_probe_failure(probed) -> None:
    with pytest.raises(ProbeFailed, match="no audio or video"):
        facts_of(probed)


@pytest.mark.parametrize(
    ("duration", "offset"), [(None, 0.0), (0.0, 0.0), (2.0, 0.2), (30.0, 3.0), (3600.0, 5.0)]
)
def test_poster_offset(duration, offset) -> None:
    assert poster_offset(duration) == pytest.approx(offset)


def facts(kind: MediaKind, duration: float | None) -> MediaFacts:
    return MediaFacts(
        kind=kind,
        duration_s=duration,
        container="x",
        bitrate=None,
        video=None,
        audio=None,
        faststart=None,
    )


@pytest.mark.parametrize(
    ("policy", "found", "refused"),
    [
        (MediaPolicy(), None, None),  # no policy: anything, probed or not
        (MediaPolicy(accept=["video"]), facts(MediaKind.VIDEO, 10), None),
        (MediaPolicy(accept=["video", "audio"]), facts(MediaKind.AUDIO, 10), None),
        (MediaPolicy(accept=["video", "audio"]), facts(MediaKind.IMAGE, None), "is image"),
        (MediaPolicy(accept=["video"]), None, "not media"),
        (MediaPolicy(max_duration=60), facts(MediaKind.VIDEO, 61), "at most 60 s"),
        (MediaPolicy(max_duration=60), facts(MediaKind.VIDEO, 60), None),
        (MediaPolicy(max_duration=60), facts(MediaKind.IMAGE, None), None),
        (MediaPolicy(max_duration=60), None, "not media"),
    ],
)
def test_policy(policy, found, refused) -> None:
    answer = policy.refusal(found, None if found else "ffprobe: Invalid data")
    if refused is None:
        assert answer is None
    else:
        assert answer is not None and refused in answer


# -- the child process and its limits ------------------------------------------------------


async def test_a_probe_past_its_time_limit_is_killed_and_reported(tmp_path) -> None:
    # ffprobe reading a FIFO nobody writes to waits for ever.
    fifo = tmp_path / "stalled.mp4"
    os.mkfifo(fifo)
    started = asyncio.get_running_loop().time()
    with pytest.raises(ProbeFailed, match=r"past its 0\.5 s limit"):
        await run_limited(ffprobe_command(Source(f"file:{fifo}")), Limits(0.5, 1 << 30))
    assert asyncio.get_running_loop().time() - started < 10


async def test_a_probe_over_its_memory_limit_is_stopped_and_reported(files, tmp_path) -> None:
    path = tmp_path / "clip.webm"
    path.write_bytes(files["clip.webm"])
    with pytest.raises(ProbeFailed):
        await run_limited(ffprobe_command(Source(f"file:{path}")), Limits(30, 16 << 20))
    # The same probe with room to work succeeds.
    await run_limited(ffprobe_command(Source(f"file:{path}")), Limits(30, 1 << 30))


async def test_a_playlist_may_not_make_the_probe_open_other_files(tmp_path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for ffprobe")
    playlist = tmp_path / "list.mp4"
    playlist.write_text(f"#EXTM3U\n#EXTINF:1,\nfile:{secret}\n")
    with pytest.raises(ProbeFailed):
        await run_limited(ffprobe_command(Source(f"file:{playlist}")), Limits(10, 1 << 30))


# -- through the server: every finished media is probed ------------------------------------


async def upload(api, name: str, data: bytes):
    started = await api.initiate(filename=name, size=len(data))
    assert started.status == 201, await started.text()
    session = (await started.json())["session_id"]
    if data:
        sent = await api.put_chunk(session, 0, data)
        assert sent.status == 200, await sent.text()
    return await api.complete(session)


EXPECTED = {
    "faststart.mp4": ("video", "h264", "aac", True),
    "moov-last.mp4": ("video", "h264", "aac", False),
    "clip.webm": ("video", "vp9", "opus", None),
    "tone.mp3": ("audio", None, "mp3", None),
    "still.png": ("image", "png", None, None),
}


@pytest.fixture
async def probing_api(start_api, tmp_path):
    return await start_api(make_settings(tmp_path / "data", probe=True))


async def test_media_get_their_facts_and_videos_a_poster(probing_api, files) -> None:
    api = probing_api
    for name, (kind, video, audio, faststart) in EXPECTED.items():
        answer = await upload(api, name, files[name])
        assert answer.status == 201, await answer.text()
        info = (await answer.json())["info"]
        found = info["media"]
        assert found is not None, (name, info["probe_error"])
        assert info["probe_error"] is None
        assert found["kind"] == kind, name
        assert (found["video"] or {}).get("codec") == video, name
        assert (found["audio"] or {}).get("codec") == audio, name
        assert found["faststart"] is faststart, name
        if kind != "image":
            assert found["duration_s"] == pytest.approx(2.0, abs=0.1), name
        if video is not None:
            assert (found["video"]["width"], found["video"]["height"]) == (160, 120)
        if kind == "video":
            assert found["video"]["fps"] == pytest.approx(10)
            assert info["poster_url"] is not None
            poster = await api.client.get(relative(api, info["poster_url"]))
            assert poster.status == 200
            assert poster.headers["Content-Type"] == "image/jpeg"
            assert (await poster.read())[:3] == b"\xff\xd8\xff"  # a JPEG
        else:
            assert info["poster_url"] is None
    listed = await api.client.get("/api/v1/media", headers=api.headers)
    items = (await listed.json())["items"]
    assert {item["media"]["kind"] for item in items} == {"video", "audio", "image"}


@pytest.mark.parametrize("name", ["truncated.mp4", "random.bin", "claims.mp4"])
async def test_what_is_not_media_stays_a_ready_media_with_a_probe_error(
    probing_api, files, name
) -> None:
    answer = await upload(probing_api, name, files[name])
    assert answer.status == 201, await answer.text()
    info = (await answer.json())["info"]
    assert info["state"] == "ready"
    assert info["media"] is None
    assert info["probe_error"].startswith("ffprobe: ")
    assert info["poster_url"] is None
    again = await probing_api.info(info["media_id"])
    assert (await again.json())["probe_error"] == info["probe_error"]


def s3_probing_settings(tmp_path, endpoint: str, bucket: str):
    return make_settings(
        tmp_path / "data",
        probe=True,
        use_cloud_storage=True,
        s3_bucket=bucket,
        s3_endpoint_url=endpoint,
    )


@pytest.mark.store  # the probe's presigned URLs are checked by a real store
async def test_a_probe_error_of_an_s3_object_names_neither_the_store_nor_its_signature(
    start_api, tmp_path, moto_endpoint, bucket, files
) -> None:
    settings = s3_probing_settings(tmp_path, moto_endpoint, bucket)
    answer = await upload(await start_api(settings), "random.bin", files["random.bin"])
    assert answer.status == 201, await answer.text()
    error = (await answer.json())["info"]["probe_error"]
    assert error.startswith("ffprobe: the input: "), error
    for secret in (moto_endpoint, "X-Amz-", bucket):
        assert secret not in error, error


@pytest.mark.store  # the probe's presigned URLs are checked by a real store
async def test_a_faststart_mp4_in_s3_is_probed_with_a_small_part_of_its_bytes(
    start_api, tmp_path, proxy, bucket, files
) -> None:
    settings = s3_probing_settings(tmp_path, proxy.url, bucket)
    proxy.answer_send_buffer = 64 * 1024
    api = await start_api(settings)
    data = files["large.mp4"]
    assert len(data) > 10 * 1024 * 1024
    started = await api.initiate(filename="large.mp4", size=len(data), chunk_size=len(data))
    session = (await started.json())["session_id"]
    assert (await api.put_chunk(session, 0, data)).status == 200
    before = proxy.answer_bytes
    answer = await api.complete(session)
    read = proxy.answer_bytes - before
    assert answer.status == 201, await answer.text()
    info = (await answer.json())["info"]
    assert info["storage"] == "s3"
    assert info["media"]["faststart"] is True
    assert info["media"]["video"]["codec"] == "h264"
    assert info["media"]["duration_s"] > 20
    # The probe, the faststart check and the poster's frame: the index (here 280 KiB) and
    # a few frames each, plus what the sockets buffer.
    assert read < 2 * 1024 * 1024, read  # of 12 MiB (1.3 MiB measured)
    poster = await api.client.get(relative(api, info["poster_url"]), allow_redirects=False)
    assert poster.status == 302
    assert (await s3_object(settings, info["media_id"]))[:3] == b"\xff\xd8\xff"


@pytest.mark.store
@pytest.mark.transport  # over https on the store tier, with its own CA (AWS_CA_BUNDLE)
async def test_an_s3_video_is_probed_and_postered_through_its_store_s_tls(
    start_api, tmp_path, moto_endpoint, bucket, files
) -> None:
    settings = s3_probing_settings(tmp_path, moto_endpoint, bucket)
    answer = await upload(await start_api(settings), "faststart.mp4", files["faststart.mp4"])
    assert answer.status == 201, await answer.text()
    info = (await answer.json())["info"]
    assert info["probe_error"] is None
    assert info["media"]["video"]["codec"] == "h264" and info["media"]["faststart"] is True
    assert (await s3_object(settings, info["media_id"]))[:3] == b"\xff\xd8\xff"


@pytest.mark.store
@pytest.mark.transport
async def test_ffprobe_reads_an_s3_url_only_from_a_certificate_it_trusts(
    moto_endpoint, bucket
) -> None:
    if not moto_endpoint.startswith("https:"):
        pytest.skip("the store is reached over http in this tier")
    url = f"{moto_endpoint}/{bucket}/nothing.mp4"
    limits = Limits(30, 1 << 30)
    with pytest.raises(ProbeFailed) as untrusted:  # the tier's own CA is not the system's
        await run_limited(ffprobe_command(Source(url, Route())), limits)
    with pytest.raises(ProbeFailed) as trusted:  # through TLS, then refused by S3
        ca_file = os.environ["AWS_CA_BUNDLE"]
        await run_limited(ffprobe_command(Source(url, Route(ca_file=ca_file))), limits)
    # Without the check, ffprobe would reach S3 (and hear its 404) either way.
    assert "Server returned 404" in str(trusted.value), trusted.value
    assert "Server returned" not in str(untrusted.value), untrusted.value


@pytest.mark.store
@pytest.mark.transport  # https: through the proxy as a CONNECT tunnel
async def test_a_store_reached_only_through_a_proxy_takes_and_probes_uploads(
    start_api, tmp_path, moto_endpoint, bucket, files, monkeypatch
) -> None:
    """S3 behind an egress proxy (HTTP(S)_PROXY), under a name only the proxy resolves:
    the parts, the probe's own reads and ffprobe's and ffmpeg's all go through it."""
    endpoint = urlsplit(moto_endpoint)
    behind = f"{EGRESS_NAME}:{endpoint.port}"
    proxy = ForwardProxy({behind: ("127.0.0.1", endpoint.port or 80)})
    await proxy.start()
    try:
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        settings = s3_probing_settings(tmp_path, f"{endpoint.scheme}://{behind}", bucket)
        answer = await upload(await start_api(settings), "faststart.mp4", files["faststart.mp4"])
        assert answer.status == 201, await answer.text()
        info = (await answer.json())["info"]
        assert info["storage"] == "s3", info
        assert info["probe_error"] is None and info["poster_url"] is not None
        assert info["media"]["video"]["codec"] == "h264" and info["media"]["faststart"] is True
    finally:
        await proxy.stop()


async def s3_object(settings, media_id: str) -> bytes:
    from aiobotocore.session import get_session

    async with get_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=settings.s3_endpoint_url
    ) as client:
        listed = await client.list_objects_v2(Bucket=settings.s3_bucket)
        (key,) = [
            o["Key"]
            for o in listed["Contents"]
            if media_id in o["Key"] and o["Key"].endswith(".poster.jpg")
        ]
        answer = await client.get_object(Bucket=settings.s3_bucket, Key=key)
        async with answer["Body"] as body:
            return await body.read()


def relative(api, url: str) -> str:
    return url.removeprefix(str(api.client.make_url("")))


async def test_accept_refuses_what_probing_says_is_not_accepted(start_api, tmp_path, files):
    api = await start_api(
        make_settings(tmp_path / "data", probe=True, accept=["video"], max_duration=60)
    )
    for name in ("tone.mp3", "random.bin"):
        answer = await upload(api, name, files[name])
        assert answer.status == 415, await answer.text()
        problem = await answer.json()
        assert problem["type"].endswith("/not-media")
        assert answer.headers["Content-Type"] == "application/problem+json"
    listed = await api.client.get("/api/v1/media", headers=api.headers)
    assert (await listed.json())["items"] == []
    media_folder = tmp_path / "data" / "media" / "alice"
    assert not media_folder.exists() or not any(media_folder.rglob("*.*"))
    assert (await upload(api, "faststart.mp4", files["faststart.mp4"])).status == 201


async def test_media_made_while_probing_was_off_are_probed_in_the_background_once(
    start_api, tmp_path, files
) -> None:
    off = await start_api(make_settings(tmp_path / "data"))
    ids = {}
    for name in ("faststart.mp4", "random.bin"):
        answer = await upload(off, name, files[name])
        ids[name] = (await answer.json())["media_id"]
        assert (await answer.json())["info"]["media"] is None
    await off.client.close()

    on = await start_api(make_settings(tmp_path / "data", probe=True))

    async def probed(media_id: str) -> dict:
        async with asyncio.timeout(30):
            while True:
                info = await (await on.info(media_id)).json()
                if info["media"] or info["probe_error"]:
                    return info
                await asyncio.sleep(0.1)

    video = await probed(ids["faststart.mp4"])
    assert video["media"]["kind"] == "video" and video["poster_url"]
    noise = await probed(ids["random.bin"])
    assert noise["probe_error"].startswith("ffprobe: ")


async def test_deleting_a_media_deletes_its_poster(probing_api, tmp_path, files) -> None:
    answer = await upload(probing_api, "faststart.mp4", files["faststart.mp4"])
    info = (await answer.json())["info"]
    posters = list((tmp_path / "data").rglob(".poster.jpg"))
    assert len(posters) == 1
    assert (await probing_api.delete(info["media_id"])).status == 204
    assert not posters[0].exists()
    gone = await probing_api.client.get(relative(probing_api, info["poster_url"]))
    assert gone.status == 404


async def test_a_tus_upload_is_probed_as_it_finishes(probing_api, files) -> None:
    data = files["clip.webm"]
    answer = await probing_api.client.post(
        "/api/v1/tus",
        data=data,
        headers={
            **probing_api.headers,
            "Tus-Resumable": "1.0.0",
            "Upload-Length": str(len(data)),
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert answer.status == 201, await answer.text()
    info = await (await probing_api.info(answer.headers["Upload-Media-Id"])).json()
    assert info["media"]["container"] == "matroska,webm"
    assert info["media"]["video"]["codec"] == "vp9"
    assert info["poster_url"] is not None


async def test_a_policy_without_probing_stops_the_start(tmp_path) -> None:
    from mediagate.config import SettingsError
    from mediagate.services import media_prober

    settings = make_settings(tmp_path / "data", accept=["video"])  # probing off
    with pytest.raises(SettingsError, match="MEDIAGATE_ACCEPT"):
        async with media_prober(settings, {}):
            pass


async def test_s3_not_answering_leaves_the_media_to_be_probed_later(tmp_path) -> None:
    from datetime import UTC, datetime

    from mediagate.core.probing import MediaProber
    from mediagate.errors import StorageUnavailable
    from mediagate.models import Media, StorageKind
    from support.server_process import free_port

    class Away:
        kind = StorageKind.S3

        def route(self, url: str) -> Route:
            return Route()

        async def presigned_url(self, key: str, **_: object) -> str:
            return f"http://127.0.0.1:{free_port()}/bucket/{key}"

    prober = MediaProber({StorageKind.S3: Away()}, limits=Limits(10, 1 << 30), concurrency=1)
    media = Media(
        id="m1",
        user_id="alice",
        filename="clip.mp4",
        content_type="video/mp4",
        size=1000,
        checksum=None,
        storage=StorageKind.S3,
        key="media/alice/m1/clip.mp4",
        created_at=datetime.now(UTC),
    )
    try:
        # Not a probe_error for ever: the finalizer (or the next background round) retries.
        with pytest.raises(StorageUnavailable):
            await prober.probe(media)
    finally:
        await prober.close()


async def test_a_probe_cut_by_a_crash_runs_again_after_the_restart(tmp_path, files) -> None:
    """SIGKILL while the media is being probed: it stays finalizing, and the restarted
    server's finalizer finishes it, probe included. The first probe hangs: an `ffprobe`
    first on the server's PATH sleeps the first time, then is the real one."""
    import signal

    import aiohttp

    from mediagate import tokens
    from support.server_process import ServerProcess

    folder = tmp_path / "bin"
    folder.mkdir()
    marker = tmp_path / "probing.pid"
    fake = folder / "ffprobe"
    fake.write_text(
        "#!/bin/sh\n"
        f'if [ -e {marker} ]; then exec {shutil.which("ffprobe")} "$@"; fi\n'
        f"echo $$ > {marker}\n"
        "exec /bin/sleep 600\n"
    )
    fake.chmod(0o755)
    secret = "probe-crash-secret-with-enough-length-for-hs256"
    env = {
        "MEDIAGATE_JWT_SECRET": secret,
        "MEDIAGATE_PROBE": "true",
        "MEDIAGATE_PROBE_TIMEOUT": "300",
        "PATH": f"{folder}:{os.environ['PATH']}",
    }
    headers = {"Authorization": f"Bearer {tokens.issue(secret.encode(), 'alice', 600)}"}
    data = files["faststart.mp4"]
    server = ServerProcess(tmp_path / "data", env)
    await server.start()
    try:
        async with aiohttp.ClientSession(server.base, headers=headers) as client:
            started = await client.post(
                "/api/v1/media/upload/initiate", json={"filename": "a.mp4", "size": len(data)}
            )
            session = (await started.json())["session_id"]
            assert (await client.post(f"/api/v1/media/upload/{session}/chunk/0", data=data)).ok
            complete = asyncio.ensure_future(
                client.post(f"/api/v1/media/upload/{session}/complete")
            )
            async with asyncio.timeout(30):
                while not marker.exists() or not marker.read_text().strip():
                    await asyncio.sleep(0.05)
            server.signal(signal.SIGKILL)
            await server.wait()
            with pytest.raises(aiohttp.ClientError):
                await complete
        os.kill(int(marker.read_text()), signal.SIGKILL)  # the orphaned first probe

        server = ServerProcess(tmp_path / "data", env)
        await server.start()
        async with aiohttp.ClientSession(server.base, headers=headers) as client:
            status = await (await client.get(f"/api/v1/media/upload/{session}")).json()
            media_id = status["media_id"]
            async with asyncio.timeout(30):
                while True:
                    info = await (await client.get(f"/api/v1/media/info/{media_id}")).json()
                    if info["state"] == "ready":
                        break
                    await asyncio.sleep(0.1)
        assert info["media"]["video"]["codec"] == "h264"
        assert info["poster_url"] is not None
    finally:
        await server.stop()
