"""schemathesis hooks of tests/test_fuzz.py: where the fuzzer or JSON Schema cannot know."""

from __future__ import annotations

import re
from typing import Any

import schemathesis
from schemathesis.generation import GenerationMode

INITIATE = "POST /api/v1/media/upload/initiate"
PUT_CHUNK = "POST /api/v1/media/upload/{session_id}/chunk/{chunk_number}"


@schemathesis.hook("map_body").apply_to(name=INITIATE)
def integral_numbers_as_integers(context: Any, body: Any) -> Any:
    """JSON Schema counts `10.0` as an integer and cannot say "written without a
    fraction"; the server refuses it on purpose (docs/api.md, "Body types";
    tests/test_upload_errors.py checks that). Send such numbers as `10`."""
    if not isinstance(body, dict):
        return body
    return {
        key: int(value) if isinstance(value, float) and value.is_integer() else value
        for key, value in body.items()
    }


CONTROL = re.compile(r"[\x00-\x1f\x7f]")
DIGEST_HEADERS = {
    "Content-MD5": re.compile(r"^[A-Za-z0-9+/]{22}==$"),
    "X-Chunk-SHA256": re.compile(r"^[0-9A-Fa-f]{64}$"),
}


@schemathesis.hook("filter_case").apply_to(name=PUT_CHUNK)
def positive_digests_match_their_pattern(context: Any, case: Any) -> bool:
    """schemathesis 4.32's coverage scenario `object_required_and_optional` sends an
    optional header as `0`, ignoring its pattern, and calls the case positive: the
    server rightly refuses that digest (400). Drop such cases; negative ones stay."""
    if case.meta is None or case.meta.generation.mode is not GenerationMode.POSITIVE:
        return True
    headers = case.headers or {}
    return all(
        pattern.match(str(headers[name]))
        for name, pattern in DIGEST_HEADERS.items()
        if name in headers
    )


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure but the ones another branch owns (named below)."""
    multipart = (case.media_type or "").startswith("multipart/form-data")
    if case.operation.label == PUT_CHUNK and multipart and response.status_code == 500:
        # Issue 8 item 6 (branch body-safety owns it; drop this once it is merged):
        # form framing aiohttp's parser refuses answers 500 today, as a form with
        # no part at all, or a part whose name holds a control character.
        fields = case.body if isinstance(case.body, dict) else {}
        return bool(fields) and not any(CONTROL.search(name) for name in fields)
    return True
