"""What a file's first bytes say it is (magic numbers), for naming a file that came
without a name. Pure: table-tested in tests/test_sniff.py."""

from __future__ import annotations

from dataclasses import dataclass

# Enough for every signature below (an MPEG transport stream's second sync byte is at 188).
SNIFF_BYTES = 512


@dataclass(frozen=True)
class Kind:
    extension: str  # with its dot
    content_type: str


MP4 = Kind(".mp4", "video/mp4")
# ISO base media files by their major brand (bytes 8..12, after `ftyp`); any other is MP4.
_BRANDS = {
    b"qt  ": Kind(".mov", "video/quicktime"),
    b"M4A ": Kind(".m4a", "audio/mp4"),
    b"M4B ": Kind(".m4a", "audio/mp4"),
    b"M4V ": Kind(".m4v", "video/x-m4v"),
    b"3gp4": Kind(".3gp", "video/3gpp"),
    b"3gp5": Kind(".3gp", "video/3gpp"),
    b"3gp6": Kind(".3gp", "video/3gpp"),
    b"3g2a": Kind(".3g2", "video/3gpp2"),
    b"heic": Kind(".heic", "image/heic"),
    b"heix": Kind(".heic", "image/heic"),
    b"mif1": Kind(".heif", "image/heif"),
    b"avif": Kind(".avif", "image/avif"),
}
# Signatures at byte 0.
_PREFIXES = (
    (b"\x89PNG\r\n\x1a\n", Kind(".png", "image/png")),
    (b"\xff\xd8\xff", Kind(".jpg", "image/jpeg")),
    (b"GIF87a", Kind(".gif", "image/gif")),
    (b"GIF89a", Kind(".gif", "image/gif")),
    (b"ID3", Kind(".mp3", "audio/mpeg")),
    (b"fLaC", Kind(".flac", "audio/flac")),
    (b"FLV\x01", Kind(".flv", "video/x-flv")),
    (b"%PDF-", Kind(".pdf", "application/pdf")),
)
# RIFF containers by their form type (bytes 8..12).
_RIFF = {
    b"WAVE": Kind(".wav", "audio/wav"),
    b"AVI ": Kind(".avi", "video/x-msvideo"),
    b"WEBP": Kind(".webp", "image/webp"),
}
_EBML = b"\x1a\x45\xdf\xa3"  # Matroska and WebM; the DocType says which
_TS_SYNC, _TS_PACKET = 0x47, 188


def sniff(head: bytes) -> Kind | None:
    """The kind of file that starts with `head`, or None if its first bytes do not say."""
    if head[4:8] == b"ftyp":
        return _BRANDS.get(head[8:12], MP4)
    for prefix, kind in _PREFIXES:
        if head.startswith(prefix):
            return kind
    if head.startswith(b"RIFF"):
        return _RIFF.get(head[8:12])
    if head.startswith(_EBML):
        if b"webm" in head[:64]:
            return Kind(".webm", "video/webm")
        return Kind(".mkv", "video/x-matroska")
    if head.startswith(b"OggS"):
        if b"\x80theora" in head[:64]:
            return Kind(".ogv", "video/ogg")
        return Kind(".ogg", "audio/ogg")
    if len(head) > _TS_PACKET and head[0] == head[_TS_PACKET] == _TS_SYNC:
        return Kind(".ts", "video/mp2t")
    return _frame_sync(head)


def _frame_sync(head: bytes) -> Kind | None:
    """MPEG audio without a tag: 11 set sync bits, then the layer bits tell MP3 (layers
    I-III) from AAC in ADTS (layer 00)."""
    if len(head) < 2 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return None
    if head[1] & 0xF6 == 0xF0:
        return Kind(".aac", "audio/aac")
    if head[1] & 0x06:
        return Kind(".mp3", "audio/mpeg")
    return None
