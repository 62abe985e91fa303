"""A file's kind from its first bytes: the signatures, as a table."""

from __future__ import annotations

import pytest

from mediagate.core.sniff import Kind, sniff


def ftyp(brand: bytes) -> bytes:
    return b"\x00\x00\x00\x20ftyp" + brand + b"\x00\x00\x02\x00isomiso2"


def riff(form: bytes) -> bytes:
    return b"RIFF\x24\x00\x00\x00" + form + b"fmt "


EBML = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x84"
TS_PACKET = b"\x47\x40\x00\x10" + b"\xff" * 184

CASES = [
    (ftyp(b"isom"), ".mp4", "video/mp4"),
    (ftyp(b"mp42"), ".mp4", "video/mp4"),
    (ftyp(b"qt  "), ".mov", "video/quicktime"),
    (ftyp(b"M4A "), ".m4a", "audio/mp4"),
    (ftyp(b"3gp4"), ".3gp", "video/3gpp"),
    (ftyp(b"heic"), ".heic", "image/heic"),
    (ftyp(b"avif"), ".avif", "image/avif"),
    (EBML + b"webm\x42\x87", ".webm", "video/webm"),
    (EBML + b"matroska", ".mkv", "video/x-matroska"),
    (b"ID3\x04\x00\x00\x00\x00\x00\x00", ".mp3", "audio/mpeg"),
    (b"\xff\xfb\x90\x64\x00", ".mp3", "audio/mpeg"),  # MPEG-1 layer III frame, no tag
    (b"\xff\xf3\x48\xc4\x00", ".mp3", "audio/mpeg"),  # MPEG-2 layer III
    (b"\xff\xf1\x50\x80\x02\x1f\xfc", ".aac", "audio/aac"),  # ADTS
    (riff(b"WAVE"), ".wav", "audio/wav"),
    (riff(b"AVI "), ".avi", "video/x-msvideo"),
    (riff(b"WEBP"), ".webp", "image/webp"),
    (b"OggS\x00\x02" + b"\x00" * 22 + b"\x01vorbis", ".ogg", "audio/ogg"),
    (b"OggS\x00\x02" + b"\x00" * 22 + b"\x80theora", ".ogv", "video/ogg"),
    (b"fLaC\x00\x00\x00\x22", ".flac", "audio/flac"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ".png", "image/png"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", ".jpg", "image/jpeg"),
    (b"GIF89a\x01\x00", ".gif", "image/gif"),
    (b"GIF87a\x01\x00", ".gif", "image/gif"),
    (b"FLV\x01\x05", ".flv", "video/x-flv"),
    (b"%PDF-1.7\n", ".pdf", "application/pdf"),
    (TS_PACKET + TS_PACKET[:4], ".ts", "video/mp2t"),
]


@pytest.mark.parametrize(("head", "extension", "content_type"), CASES)
def test_the_first_bytes_tell_the_kind(head: bytes, extension: str, content_type: str) -> None:
    assert sniff(head) == Kind(extension, content_type)


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"hello world",
        b"\x00\x00\x00\x20ftip",  # not ftyp
        riff(b"CDXA"),  # a RIFF form not listed
        b"\xff\xe0\x00",  # sync bits, layer 00, not ADTS: not audio that says so
        b"\xff\xd8",  # too short for JPEG's three bytes
        TS_PACKET,  # one packet: no second sync byte to confirm it
        b"\x47" + b"\x00" * 200,  # a G, and no sync byte at 188
    ],
)
def test_bytes_that_say_nothing_give_no_kind(head: bytes) -> None:
    assert sniff(head) is None
