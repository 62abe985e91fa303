from __future__ import annotations

import pytest

from mediagate.filenames import MAX_FILENAME_BYTES, sanitize_filename


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("challenge_video.mp4", "challenge_video.mp4"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("..", "file"),
        ("...", "file"),
        (".hidden.mp4", "hidden.mp4"),
        ("a\x00b\x1f\x7fc.mp4", "abc.mp4"),
        ("bad\udcffname.mp4", "badname.mp4"),  # os.fsdecode of a non-UTF-8 name
        ("dir/", "file"),
        ("  spaced name.mov  ", "spaced name.mov"),
        ("vidéo été.mp4", "vidéo été.mp4"),
        ("", "file"),
        # Bidirectional controls: `\u202egnp.exe` shows as `exe.png` in a download bar.
        ("\u202egnp.exe", "gnp.exe"),
        ("\u202dgnp.exe", "gnp.exe"),
        ("\u2067gnp.exe", "gnp.exe"),
        ("\u200fgnp.exe", "gnp.exe"),
        ("\u061cgnp.exe", "gnp.exe"),
        # C1 controls (NEL, CSI), line and paragraph separators, zero-width characters.
        ("a\x80b\x85c\x9b.mp4", "abc.mp4"),
        ("line\u2028break\u2029.mp4", "linebreak.mp4"),
        ("zero\u200bwidth\u200c\u200d\u2060\ufeff.mp4", "zerowidth.mp4"),
        ("\ufeffbom.mp4", "bom.mp4"),
        # Capped at 200 bytes on a character boundary, the extension kept.
        ("é" * 300 + ".mp4", "é" * 98 + ".mp4"),
        ("a" * 300 + ".mp4", "a" * 196 + ".mp4"),
        ("a" * 300, "a" * 200),
        ("title." + "b" * 300, ("title." + "b" * 300)[:200]),  # a dot, no extension
    ],
)
def test_sanitize_filename(given, expected):
    assert sanitize_filename(given) == expected
    assert len(expected.encode()) <= MAX_FILENAME_BYTES
