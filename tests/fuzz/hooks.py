"""schemathesis hooks of tests/test_fuzz.py: where the fuzzer or JSON Schema cannot know."""

from __future__ import annotations

import re
from typing import Any

import schemathesis
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode

from mediagate.web.api import API
from mediagate.web.ietf import INTEROP_VERSIONS

INITIATE = "POST /api/v1/media/upload/initiate"
PUT_CHUNK = "POST /api/v1/media/upload/{session_id}/chunk/{chunk_number}"
TUS_CREATE = "POST /api/v1/tus"
TUS_PATCH = "PATCH /api/v1/tus/{upload_id}"
DIRECT_CREATE = [
    "POST /api/v1/companion/s3/multipart",
    "POST /api/v1/companion/grant/{grant}/s3/multipart",
]

IETF_CREATE = "POST /api/v1/uploads"
IETF_APPEND = "PATCH /api/v1/uploads/{upload_id}"

# tus and IETF bodies are bytes like any octet stream.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
schemathesis.serializer.alias("application/partial-upload", "application/octet-stream")


@schemathesis.hook("map_body").apply_to(name=[INITIATE, *DIRECT_CREATE])
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


# Optional headers with a pattern, as the document gives them.
PATTERNED_HEADERS = {
    parameter["name"]: re.compile(parameter["schema"]["pattern"])
    for operations in API
    for operation in operations
    for parameter in operation.parameters
    if parameter["in"] == "header" and not parameter["required"]
    if "pattern" in parameter["schema"]
}


@schemathesis.hook("filter_case").apply_to(
    name=[PUT_CHUNK, TUS_CREATE, TUS_PATCH, IETF_CREATE, IETF_APPEND]
)
def positive_headers_match_their_pattern(context: Any, case: Any) -> bool:
    """schemathesis 4.32's coverage scenario `object_required_and_optional` sends an
    optional header as `0`, ignoring its pattern, and calls the case positive: the
    server rightly refuses that digest or checksum (400). Drop such cases; negative
    ones stay."""
    if case.meta is None or case.meta.generation.mode is not GenerationMode.POSITIVE:
        return True
    headers = case.headers or {}
    return all(
        pattern.match(str(headers[name]))
        for name, pattern in PATTERNED_HEADERS.items()
        if name in headers
    )


@schemathesis.hook("filter_case").apply_to(name=[TUS_CREATE, TUS_PATCH])
def tus_bodies_are_any_bytes(context: Any, case: Any) -> bool:
    """Any bytes are an `application/offset+octet-stream` body, and the server takes
    them as they come: schemathesis knows that of `application/octet-stream` alone,
    and calls a "non-string" body of this type negative. Drop such cases."""
    if case.meta is None:
        return True
    body = case.meta.components.get(ParameterLocation.BODY)
    return body is None or body.mode is not GenerationMode.NEGATIVE


@schemathesis.hook("filter_case").apply_to(name=[IETF_CREATE, IETF_APPEND])
def no_interim_responses(context: Any, case: Any) -> bool:
    """With an interop version served, a creation or append is answered by 104s before
    its final answer, and the fuzzer's HTTP client (requests) takes the first 104 for
    the answer. Drop such cases (one naming a version not served stays: 400 without a
    104); tests/test_ietf_spec.py reads the 104s off the socket."""
    served = {str(version) for version in INTEROP_VERSIONS}
    version = (case.headers or {}).get("Upload-Draft-Interop-Version")
    return version is None or str(version).strip() not in served
