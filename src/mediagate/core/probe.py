"""FFmpeg's probing of an untrusted file, in a separate process with limits.

`ffprobe` runs as a child process, not FFmpeg's libraries in this one (PyAV): a file
made to crash or exhaust a demuxer takes down the child only; the child gets a time
limit (killed when it runs out), an address-space and CPU limit (`prlimit`), no
environment (no secret of the server's), only the one file or URL (`-protocol_whitelist`)
and only the demuxers of media files (`-format_whitelist`: no playlist, concat or image
sequence demuxer that would open other files or URLs). It never runs on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import shutil
from dataclasses import dataclass
from typing import Any

from mediagate.models import AudioFacts, MediaFacts, MediaKind, VideoFacts
from mediagate.storage.base import Route

# Demuxers of files people upload; each reads only the input it is given.
FORMATS = (
    "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,mpegts,mpeg,asf,ogg,mp3,aac,wav,flac,"
    "png_pipe,jpeg_pipe,webp_pipe,gif"
)
# An image "stream" is one frame: such demuxers name the media an image, not a video.
IMAGE_FORMATS = frozenset({"png_pipe", "jpeg_pipe", "webp_pipe", "gif"})
LOCAL_PROTOCOLS = "file"
URL_PROTOCOLS = "http,https,tcp,tls"
# A small socket buffer for a remote input: FFmpeg asks for the rest of the object from
# where it reads (`Range: bytes=N-`), and what the kernel buffers beyond what it reads
# (megabytes, by autotuning) is paid for and thrown away when it closes.
RECEIVE_BUFFER = 64 * 1024
# What a child may print before it is cut off: ffprobe's JSON is a few KiB, a poster tens.
MAX_OUTPUT = 8 * 1024 * 1024
POSTER_WIDTH = 640
POSTER_MAX_OFFSET = 5.0
URL_IN_TEXT = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)


class ProbeFailed(Exception):
    """The file could not be probed: the message says why, for `probe_error`."""


@dataclass(frozen=True)
class Source:
    """What a child reads: a local file (`file:` and its path), or an S3 object's
    presigned URL and how to reach it (storage/base.py `Route`)."""

    location: str
    route: Route | None = None  # None: a local file


@dataclass(frozen=True)
class Limits:
    timeout: float  # seconds of wall-clock time
    memory: int  # bytes of address space


async def run_limited(command: list[str], limits: Limits) -> bytes:
    """The child's standard output; ProbeFailed if it fails, overruns or is killed."""
    # Found on the server's PATH: the child's environment is empty.
    program = shutil.which(command[0])
    if program is None:
        raise ProbeFailed(f"{command[0]} is not installed")
    prlimit = shutil.which("prlimit")
    wrapper = []
    if prlimit is not None:
        cpu = max(1, int(limits.timeout) + 1)
        wrapper = [prlimit, f"--as={limits.memory}", f"--cpu={cpu}", "--"]
    process = await asyncio.create_subprocess_exec(
        *wrapper,
        program,
        *command[1:],
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={},
    )
    try:
        async with asyncio.timeout(limits.timeout):
            output, errors = await _gather_output(process)
    except TimeoutError:
        raise ProbeFailed(f"{command[0]} ran past its {limits.timeout:g} s limit") from None
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    if process.returncode != 0:
        raise ProbeFailed(_failure(command, process.returncode, errors))
    return output


async def _gather_output(process: asyncio.subprocess.Process) -> tuple[bytes, bytes]:
    assert process.stdout is not None and process.stderr is not None
    output, errors = await asyncio.gather(
        _read_up_to(process.stdout, MAX_OUTPUT + 1), _read_up_to(process.stderr, 64 * 1024)
    )
    if len(output) > MAX_OUTPUT:
        raise ProbeFailed(f"the output passed {MAX_OUTPUT} bytes")
    await process.wait()
    return output, errors


async def _read_up_to(stream: asyncio.StreamReader, limit: int) -> bytes:
    """What the child writes until it closes the stream, the first `limit` bytes kept
    (the rest read and dropped, so that a chatty child never blocks on a full pipe)."""
    pieces = []
    kept = 0
    while piece := await stream.read(64 * 1024):
        if kept < limit:
            pieces.append(piece[: limit - kept])
            kept += len(pieces[-1])
    return b"".join(pieces)


def _failure(command: list[str], code: int | None, errors: bytes) -> str:
    program = command[0]
    if code is not None and code < 0:
        return f"{program} was killed by signal {-code} (over its memory or CPU limit?)"
    # The last line is the one that says why (the earlier ones name the demuxer's address).
    lines = [line for line in errors.decode(errors="replace").splitlines() if line.strip()]
    reason = lines[-1].strip() if lines else f"exit status {code}"
    return f"{program}: {_without_the_input(reason, command)[:300]}"


def _without_the_input(reason: str, command: list[str]) -> str:
    """`reason` with the input named "the input": users read probe_error, and the input is
    a path in the data directory or a presigned URL (the store's address, an access key)."""
    source = command[command.index("-i") + 1]
    return URL_IN_TEXT.sub("the input", reason.replace(source, "the input"))


def input_options(source: Source) -> list[str]:
    """What an input may be: the one file or URL, of a media demuxer; over TLS, only
    from a server whose certificate holds (FFmpeg checks none unless asked)."""
    route = source.route
    if route is None:
        return ["-protocol_whitelist", LOCAL_PROTOCOLS, "-format_whitelist", FORMATS]
    # ffmpeg refuses an option that no protocol of the input took: each only where taken.
    tls = source.location.startswith("https:")
    protocols, options = URL_PROTOCOLS, []
    if not (tls and route.proxy):  # a CONNECT tunnel opens its socket with options of its own
        options += ["-recv_buffer_size", str(RECEIVE_BUFFER)]
    if tls:
        options += ["-tls_verify", "1", *(["-ca_file", route.ca_file] if route.ca_file else [])]
    if route.proxy:  # https goes through it as a CONNECT tunnel ("httpproxy")
        protocols, options = f"{protocols},httpproxy", [*options, "-http_proxy", route.proxy]
    return ["-protocol_whitelist", protocols, *options, "-format_whitelist", FORMATS]


def ffprobe_command(source: Source) -> list[str]:
    return [
        "ffprobe",
        "-v",
        "error",
        *input_options(source),
        "-of",
        "json",
        "-show_format",
        "-show_streams",
        "-i",
        source.location,
    ]


def poster_command(source: Source, *, at: float) -> list[str]:
    """One frame at `at` seconds as a JPEG at most POSTER_WIDTH wide, on standard output."""
    return [
        "ffmpeg",
        "-v",
        "error",
        *input_options(source),
        "-ss",
        f"{at:.3f}",
        "-i",
        source.location,
        "-frames:v",
        "1",
        "-an",
        "-vf",
        f"scale='min({POSTER_WIDTH},iw)':-2",
        "-f",
        "image2pipe",
        "-c:v",
        "mjpeg",
        "-q:v",
        "4",
        "pipe:1",
    ]


def poster_offset(duration_s: float | None) -> float:
    """10 % of the way in, at most POSTER_MAX_OFFSET seconds."""
    if not duration_s or duration_s <= 0:
        return 0.0
    return min(duration_s * 0.1, POSTER_MAX_OFFSET)


def facts_of(probed: dict[str, Any]) -> MediaFacts:
    """The facts in ffprobe's `-show_format -show_streams` JSON; ProbeFailed if it names
    no audio or video stream."""
    fmt = probed.get("format") or {}
    container = str(fmt.get("format_name") or "unknown")
    streams = [
        stream
        for stream in probed.get("streams") or []
        if not (stream.get("disposition") or {}).get("attached_pic")
    ]
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is not None and container in IMAGE_FORMATS:
        kind = MediaKind.IMAGE
    elif video is not None:
        kind = MediaKind.VIDEO
    elif audio is not None:
        kind = MediaKind.AUDIO
    else:
        raise ProbeFailed("no audio or video stream")
    return MediaFacts(
        kind=kind,
        duration_s=_number(fmt.get("duration")),
        container=container,
        bitrate=_integer(fmt.get("bit_rate")),
        video=_video(video) if video is not None else None,
        audio=_audio(audio) if audio is not None else None,
        faststart=None,
    )


def _video(stream: dict[str, Any]) -> VideoFacts:
    return VideoFacts(
        codec=str(stream.get("codec_name") or "unknown"),
        width=_integer(stream.get("width")) or 0,
        height=_integer(stream.get("height")) or 0,
        fps=_rate(stream.get("avg_frame_rate")) or _rate(stream.get("r_frame_rate")),
        rotation=_rotation(stream),
    )


def _audio(stream: dict[str, Any]) -> AudioFacts:
    return AudioFacts(
        codec=str(stream.get("codec_name") or "unknown"),
        channels=_integer(stream.get("channels")),
        sample_rate=_integer(stream.get("sample_rate")),
    )


def _rotation(stream: dict[str, Any]) -> int:
    """Clockwise degrees, 0..270: a display matrix's rotation is counter-clockwise."""
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            turned = _number(side["rotation"])
            return int(-(turned or 0)) % 360
    turned = _number((stream.get("tags") or {}).get("rotate"))
    return int(turned or 0) % 360


def _rate(text: Any) -> float | None:
    if not isinstance(text, str) or "/" not in text:
        return None
    top, _, bottom = text.partition("/")
    try:
        rate = int(top) / int(bottom)
    except (ValueError, ZeroDivisionError):
        return None
    return round(rate, 3) if rate > 0 else None


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _integer(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


def parse_ffprobe(output: bytes) -> MediaFacts:
    try:
        probed = json.loads(output)
    except ValueError:
        raise ProbeFailed("ffprobe printed no JSON") from None
    if not isinstance(probed, dict):
        raise ProbeFailed("ffprobe printed no JSON object")
    return facts_of(probed)
