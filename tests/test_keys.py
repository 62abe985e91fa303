from __future__ import annotations

import pytest

from mediagate.core.keys import is_valid_user_id, object_key


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
        # `$` matches before a final newline: the rule must match the whole id.
        ("alice\n", False),
        ("alice\r\n", False),
        ("\nalice", False),
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
