"""Which uploads a browser may show inline, and the headers every other one gets."""

from __future__ import annotations

import pytest

from mediagate.disposition import DOWNLOAD_TYPE, is_passive, presentation


@pytest.mark.parametrize(
    ("content_type", "passive"),
    [
        ("video/mp4", True),
        ("audio/mpeg", True),
        ("image/png", True),
        ("IMAGE/JPEG", True),
        ("video/webm; codecs=vp9", True),
        ("application/octet-stream", True),
        ("image/svg+xml", False),
        ("image/svg", False),
        ("image/x-anything+xml", False),
        ("text/html", False),
        ("text/html; charset=utf-8", False),
        ("application/xhtml+xml", False),
        ("text/xml", False),
        ("application/xml", False),
        ("text/javascript", False),
        ("application/javascript", False),
        ("text/css", False),
        ("application/pdf", False),
        ("text/plain", False),
        ("video", False),
        ("video/", False),
        ("video/mp4\r\nX-Evil: 1", False),
        ("video/mp4 <script>", False),
        ("", False),
    ],
)
def test_only_media_browsers_never_run_are_passive(content_type, passive):
    assert is_passive(content_type) is passive


def test_passive_media_are_shown_inline_under_their_own_type():
    shown = presentation("clip.mp4", "video/mp4")
    assert (shown.content_type, shown.sandbox) == ("video/mp4", False)
    assert shown.content_disposition.startswith('inline; filename="clip.mp4"')


def test_active_media_are_octet_stream_attachments_in_a_sandbox():
    shown = presentation("page.html", "text/html")
    assert (shown.content_type, shown.sandbox) == (DOWNLOAD_TYPE, True)
    assert shown.content_disposition.startswith('attachment; filename="page.html"')
