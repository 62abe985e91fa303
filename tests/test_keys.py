from __future__ import annotations

import pytest

from mediagate.core.keys import MAX_FILENAME_BYTES, is_valid_user_id, object_key, sanitize_filename


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
    ],
)
def test_sanitize_filename(given, expected):
    assert sanitize_filename(given) == expected


def test_long_names_are_capped_on_a_character_boundary():
    name = sanitize_filename("é" * 300 + ".mp4")
    assert len(name.encode()) <= MAX_FILENAME_BYTES
    name.encode("utf-8").decode("utf-8")


@pytest.mark.parametrize(
    ("user_id", "valid"),
    [
        ("user123", True),
        ("alice@example.com", True),
        ("a/b", False),
        ("..", False),
        (".", False),
        ("", False),
        ("a" * 129, False),
        ("x\x00", False),
    ],
)
def test_user_ids(user_id, valid):
    assert is_valid_user_id(user_id) is valid


def test_object_key_layout():
    assert object_key("media/", "user123", "abc-def-123", "challenge_video.mp4") == (
        "media/user123/abc-def-123/challenge_video.mp4"
    )
    with pytest.raises(ValueError):
        object_key("media/", "../x", "m", "f")
