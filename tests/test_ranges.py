"""Table-driven tests of mediagate.web.ranges: request in, decision out."""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import formatdate

import pytest
from multidict import CIMultiDict

from mediagate.web.ranges import (
    MAX_RANGES,
    ByteRange,
    Decision,
    EntityTag,
    NotModified,
    PreconditionFailed,
    RangeNotSatisfiable,
    SendRange,
    SendRanges,
    SendWhole,
    decide,
    parse_http_date,
    requested_ranges,
)

SIZE = 10_000
ETAG = '"v1"'
LAST_MODIFIED = 1_700_000_000  # Tue, 14 Nov 2023 22:13:20 GMT
NOW = LAST_MODIFIED + 3600


def http_date(timestamp: float) -> str:
    return formatdate(timestamp, usegmt=True)


LM_DATE = http_date(LAST_MODIFIED)
BEFORE_LM = http_date(LAST_MODIFIED - 1)
AFTER_LM = http_date(LAST_MODIFIED + 1)

WHOLE = SendWhole()
NOT_MODIFIED = NotModified()
PRECONDITION_FAILED = PreconditionFailed()


def part(start: int, stop: int) -> SendRange:
    return SendRange(ByteRange(start, stop))


def parts(*bounds: tuple[int, int]) -> SendRanges:
    return SendRanges(tuple(ByteRange(start, stop) for start, stop in bounds))


@dataclass(frozen=True)
class Case:
    id: str
    headers: list[tuple[str, str]]
    expected: Decision
    method: str = "GET"
    size: int = SIZE
    etag: str = ETAG
    last_modified: float = LAST_MODIFIED
    now: float = NOW


def rng(value: str) -> list[tuple[str, str]]:
    return [("Range", value)]


SIXTEEN_RANGES = "bytes=" + ",".join(f"{i * 100}-{i * 100 + 9}" for i in range(MAX_RANGES))
SEVENTEEN_RANGES = "bytes=" + ",".join(f"{i * 100}-{i * 100 + 9}" for i in range(MAX_RANGES + 1))

RANGE_CASES = [
    Case("no range", [], WHOLE),
    Case("first 500", rng("bytes=0-499"), part(0, 500)),
    Case("open range", rng("bytes=500-"), part(500, SIZE)),
    Case("suffix", rng("bytes=-500"), part(SIZE - 500, SIZE)),
    Case("single first byte", rng("bytes=0-0"), part(0, 1)),
    Case("last byte by position", rng("bytes=9999-"), part(9999, SIZE)),
    Case("last byte by suffix", rng("bytes=-1"), part(SIZE - 1, SIZE)),
    Case("end past EOF is clamped", rng("bytes=9000-20000"), part(9000, SIZE)),
    Case("whole file as a range is still 206", rng("bytes=0-"), part(0, SIZE)),
    Case("overflowing last-pos clamps", rng("bytes=0-99999999999999999999"), part(0, SIZE)),
    Case("overflowing suffix is the whole file", rng("bytes=-99999999999999999999"), part(0, SIZE)),
    Case("suffix longer than file", rng("bytes=-20000"), part(0, SIZE)),
    Case("5000-digit last-pos clamps", rng("bytes=5-" + "9" * 5000), part(5, SIZE)),
    Case(
        "5000-digit first-pos is past EOF",
        rng("bytes=" + "9" * 5000 + "-"),
        RangeNotSatisfiable(SIZE),
    ),
    Case("leading zeros", rng("bytes=0000010-0000019"), part(10, 20)),
    Case("unit is case-insensitive", rng("BYTES=0-9"), part(0, 10)),
    Case("-0 is unsatisfiable", rng("bytes=-0"), RangeNotSatisfiable(SIZE)),
    Case("start at EOF", rng("bytes=10000-"), RangeNotSatisfiable(SIZE)),
    Case("start past EOF", rng("bytes=10000-10005"), RangeNotSatisfiable(SIZE)),
    Case("all unsatisfiable", rng("bytes=20000-,-0"), RangeNotSatisfiable(SIZE)),
    Case("satisfiable ones are served", rng("bytes=20000-,0-9,-0"), part(0, 10)),
    # §14.2: invalid syntax or an unknown unit means the Range is ignored.
    Case("last before first", rng("bytes=5-1"), WHOLE),
    Case("not numbers", rng("bytes=abc"), WHOLE),
    Case("empty set", rng("bytes="), WHOLE),
    Case("no set", rng("bytes"), WHOLE),
    Case("only commas", rng("bytes=,,"), WHOLE),
    Case("unknown unit", rng("items=0-1"), WHOLE),
    Case("three positions", rng("bytes=0-1-2"), WHOLE),
    Case("double minus", rng("bytes=--1"), WHOLE),
    Case("plus sign", rng("bytes=+1-2"), WHOLE),
    Case("spaces inside a range", rng("bytes=1 - 2"), WHOLE),
    Case("hex", rng("bytes=0x10-"), WHOLE),
    Case("non-ASCII digits", rng("bytes=\u0661-2"), WHOLE),
    Case("one bad element spoils the set", rng("bytes=0-1,x"), WHOLE),
    Case("Range sent twice", [("Range", "bytes=0-1"), ("Range", "bytes=2-3")], WHOLE),
    Case("HEAD ignores Range", rng("bytes=0-499"), WHOLE, method="HEAD"),
    Case("other methods ignore Range", rng("bytes=0-499"), WHOLE, method="DELETE"),
    # Several ranges.
    Case("two ranges", rng("bytes=0-99,200-299"), parts((0, 100), (200, 300))),
    Case("request order kept", rng("bytes=200-299,0-99"), parts((200, 300), (0, 100))),
    Case("OWS and empty elements", rng("bytes=0-9, ,\t20-29,"), parts((0, 10), (20, 30))),
    Case("overlapping coalesce to one 206", rng("bytes=0-99,50-149"), part(0, 150)),
    Case("adjacent coalesce to one 206", rng("bytes=0-99,100-199"), part(0, 200)),
    Case("duplicates coalesce", rng("bytes=5-9,5-9"), part(5, 10)),
    Case(
        "coalesced part takes its earliest position",
        rng("bytes=500-599,0-99,90-109,550-"),
        parts((500, SIZE), (0, 110)),
    ),
    Case("suffix among ranges", rng("bytes=0-9,-10"), parts((0, 10), (SIZE - 10, SIZE))),
    Case(
        "16 ranges are served",
        rng(SIXTEEN_RANGES),
        parts(*((i * 100, i * 100 + 10) for i in range(MAX_RANGES))),
    ),
    Case("17 ranges: whole file", rng(SEVENTEEN_RANGES), WHOLE),
    Case(
        "17 unsatisfiable ranges: whole file, not 416", rng("bytes=" + ",".join(["-0"] * 17)), WHOLE
    ),
    Case("twice the file is allowed", rng("bytes=0-,0-"), part(0, SIZE)),
    Case("more than twice the file: whole file", rng("bytes=0-,0-,0-0"), WHOLE),
    # Zero-length and one-byte files.
    Case("empty file, no Range", [], WHOLE, size=0),
    Case("empty file, bytes=0-", rng("bytes=0-"), RangeNotSatisfiable(0), size=0),
    Case("empty file, bytes=0-0", rng("bytes=0-0"), RangeNotSatisfiable(0), size=0),
    Case("empty file, bytes=-0", rng("bytes=-0"), RangeNotSatisfiable(0), size=0),
    Case("empty file, non-zero suffix: 200", rng("bytes=-5"), WHOLE, size=0),
    Case("empty file, mixed set with suffix: 200", rng("bytes=0-,-5"), WHOLE, size=0),
    Case("empty file, invalid Range", rng("bytes=x"), WHOLE, size=0),
    Case("1-byte file, open range", rng("bytes=0-"), part(0, 1), size=1),
    Case("1-byte file, long suffix", rng("bytes=-5"), part(0, 1), size=1),
    Case("1-byte file, past EOF", rng("bytes=1-"), RangeNotSatisfiable(1), size=1),
]

R = ("Range", "bytes=0-99")
FIRST_100 = part(0, 100)

CONDITIONAL_CASES = [
    # If-Match: strong comparison, 412 when it fails (§13.1.1).
    Case("If-Match matches", [("If-Match", ETAG), R], FIRST_100),
    Case("If-Match one of several", [("If-Match", '"v0", "v1"'), R], FIRST_100),
    Case("If-Match split over lines", [("If-Match", '"v0"'), ("If-Match", '"v1"'), R], FIRST_100),
    Case("If-Match star", [("If-Match", "*"), R], FIRST_100),
    Case("If-Match other", [("If-Match", '"v2"'), R], PRECONDITION_FAILED),
    Case("If-Match weak tag never matches", [("If-Match", 'W/"v1"')], PRECONDITION_FAILED),
    Case("If-Match on a weak etag", [("If-Match", ETAG)], PRECONDITION_FAILED, etag='W/"v1"'),
    Case("If-Match malformed", [("If-Match", "v1")], PRECONDITION_FAILED),
    Case("If-Match on HEAD", [("If-Match", '"v2"')], PRECONDITION_FAILED, method="HEAD"),
    # If-Unmodified-Since, only without If-Match (§13.1.4).
    Case("If-Unmodified-Since older", [("If-Unmodified-Since", BEFORE_LM)], PRECONDITION_FAILED),
    Case("If-Unmodified-Since equal", [("If-Unmodified-Since", LM_DATE), R], FIRST_100),
    Case("If-Unmodified-Since invalid", [("If-Unmodified-Since", "yesterday"), R], FIRST_100),
    Case(
        "If-Unmodified-Since ignored with If-Match",
        [("If-Match", ETAG), ("If-Unmodified-Since", BEFORE_LM), R],
        FIRST_100,
    ),
    # If-None-Match: weak comparison, 304 for GET/HEAD (§13.1.2).
    Case("If-None-Match matches", [("If-None-Match", ETAG)], NOT_MODIFIED),
    Case("If-None-Match weak", [("If-None-Match", 'W/"v1"')], NOT_MODIFIED),
    Case("If-None-Match in list", [("If-None-Match", '"a", W/"v1"')], NOT_MODIFIED),
    Case("If-None-Match star", [("If-None-Match", "*")], NOT_MODIFIED),
    Case("If-None-Match on HEAD", [("If-None-Match", ETAG)], NOT_MODIFIED, method="HEAD"),
    Case("If-None-Match beats Range", [("If-None-Match", ETAG), R], NOT_MODIFIED),
    Case("If-None-Match other", [("If-None-Match", '"v2"'), R], FIRST_100),
    Case("If-None-Match malformed", [("If-None-Match", "v1")], WHOLE),
    Case(
        "If-None-Match, unsafe method",
        [("If-None-Match", ETAG)],
        PRECONDITION_FAILED,
        method="DELETE",
    ),
    # If-Modified-Since: only without If-None-Match, only GET/HEAD (§13.1.3).
    Case("If-Modified-Since equal", [("If-Modified-Since", LM_DATE)], NOT_MODIFIED),
    Case("If-Modified-Since later", [("If-Modified-Since", AFTER_LM)], NOT_MODIFIED),
    Case("If-Modified-Since earlier", [("If-Modified-Since", BEFORE_LM)], WHOLE),
    Case(
        "If-Modified-Since compares whole seconds",
        [("If-Modified-Since", LM_DATE)],
        NOT_MODIFIED,
        last_modified=LAST_MODIFIED + 0.7,
    ),
    Case(
        "If-Modified-Since, RFC 850 date",
        [("If-Modified-Since", "Tuesday, 14-Nov-23 22:13:20 GMT")],
        NOT_MODIFIED,
    ),
    Case(
        "If-Modified-Since, asctime date",
        [("If-Modified-Since", "Tue Nov 14 22:13:20 2023")],
        NOT_MODIFIED,
    ),
    Case("If-Modified-Since invalid", [("If-Modified-Since", "Tue, 14 Nov 2023")], WHOLE),
    Case(
        "If-Modified-Since as a list is ignored",
        [("If-Modified-Since", f"{LM_DATE}, {LM_DATE}")],
        WHOLE,
    ),
    Case(
        "If-Modified-Since twice is ignored",
        [("If-Modified-Since", LM_DATE), ("If-Modified-Since", LM_DATE)],
        WHOLE,
    ),
    Case(
        "If-Modified-Since ignored with If-None-Match",
        [("If-None-Match", '"v2"'), ("If-Modified-Since", AFTER_LM)],
        WHOLE,
    ),
    Case(
        "If-Modified-Since, unsafe method",
        [("If-Modified-Since", AFTER_LM)],
        WHOLE,
        method="DELETE",
    ),
    # Order (§13.2.2): If-Match, If-Unmodified-Since before If-None-Match.
    Case(
        "failing If-Match beats matching If-None-Match",
        [("If-Match", '"v2"'), ("If-None-Match", ETAG)],
        PRECONDITION_FAILED,
    ),
    Case(
        "failing If-Unmodified-Since beats If-Modified-Since",
        [("If-Unmodified-Since", BEFORE_LM), ("If-Modified-Since", AFTER_LM)],
        PRECONDITION_FAILED,
    ),
    # If-Range (§13.1.5).
    Case("If-Range same etag", [("If-Range", ETAG), R], FIRST_100),
    Case("If-Range other etag", [("If-Range", '"v2"'), R], WHOLE),
    Case("If-Range weak etag", [("If-Range", 'W/"v1"'), R], WHOLE),
    Case("If-Range on a weak etag", [("If-Range", 'W/"v1"'), R], WHOLE, etag='W/"v1"'),
    Case("If-Range malformed etag", [("If-Range", '"v1'), R], WHOLE),
    Case("If-Range exact date", [("If-Range", LM_DATE), R], FIRST_100),
    Case("If-Range later date", [("If-Range", AFTER_LM), R], WHOLE),
    Case("If-Range earlier date", [("If-Range", BEFORE_LM), R], WHOLE),
    Case("If-Range garbage", [("If-Range", "soon"), R], WHOLE),
    Case("If-Range twice", [("If-Range", ETAG), ("If-Range", ETAG), R], WHOLE),
    Case(
        "If-Range date of a file modified within the last second is weak",
        [("If-Range", LM_DATE), R],
        WHOLE,
        now=LAST_MODIFIED + 0.5,
    ),
    Case(
        "If-Range passes, Range unsatisfiable",
        [("If-Range", ETAG), ("Range", "bytes=-0")],
        RangeNotSatisfiable(SIZE),
    ),
    Case(
        "If-Range fails, Range unsatisfiable", [("If-Range", '"v2"'), ("Range", "bytes=-0")], WHOLE
    ),
    Case("If-Range on HEAD", [("If-Range", ETAG), R], WHOLE, method="HEAD"),
]


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.id) for c in RANGE_CASES + CONDITIONAL_CASES]
)
def test_decide(case: Case) -> None:
    decision = decide(
        case.method,
        CIMultiDict(case.headers),
        size=case.size,
        etag=EntityTag.parse(case.etag),
        last_modified=case.last_modified,
        now=case.now,
    )
    assert decision == case.expected


def test_content_range_is_inclusive() -> None:
    assert ByteRange(0, 500).content_range(1000) == "bytes 0-499/1000"
    assert ByteRange(999, 1000).content_range(1000) == "bytes 999-999/1000"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"abc"', EntityTag('"abc"')),
        ('W/"abc"', EntityTag('"abc"', weak=True)),
        ('""', EntityTag('""')),
        ('"a,b"', EntityTag('"a,b"')),
    ],
)
def test_entity_tag_round_trip(value: str, expected: EntityTag) -> None:
    assert EntityTag.parse(value) == expected
    assert str(expected) == value


@pytest.mark.parametrize("value", ["abc", '"abc', 'w/"abc"', '"a"b"', '"a b"', ""])
def test_entity_tag_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        EntityTag.parse(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Sun, 06 Nov 1994 08:49:37 GMT", 784111777),
        ("Sunday, 06-Nov-94 08:49:37 GMT", 784111777),
        ("Sun Nov  6 08:49:37 1994", 784111777),
        # Two-digit years: at most 50 years ahead of now (2023), else the century before.
        ("Wednesday, 01-Jan-70 00:00:00 GMT", 3155760000),
        ("Tuesday, 01-Jan-80 00:00:00 GMT", 315532800),
        ("Sun, 30 Feb 1994 08:49:37 GMT", None),
        ("Sun, 06 Nov 1994 08:49:37 +0000", None),
        ("Sun, 06 Nov 1994 25:49:37 GMT", None),
        ("1994-11-06T08:49:37Z", None),
        ("", None),
    ],
)
def test_parse_http_date(value: str, expected: int | None) -> None:
    assert parse_http_date(value, now=NOW) == expected


@pytest.mark.parametrize(
    ("method", "range_value", "decision"),
    [
        ("GET", None, SendWhole()),
        ("HEAD", "bytes=0-1", SendWhole()),
        ("GET", "bytes=5-2", SendWhole()),
        ("GET", "items=0-1", SendWhole()),
        ("GET", "bytes=0-1", SendRange(ByteRange(0, 2))),
        ("GET", "bytes=-3", SendRange(ByteRange(7, 10))),
        ("GET", "bytes=0-1,5-6", SendRanges((ByteRange(0, 2), ByteRange(5, 7)))),
        ("GET", "bytes=0-1,2-3", SendRange(ByteRange(0, 4))),
        ("GET", "bytes=10-", RangeNotSatisfiable(10)),
        ("GET", "bytes=-0", RangeNotSatisfiable(10)),
    ],
)
def test_requested_ranges_decides_the_range_alone(method, range_value, decision):
    """What proxy mode decides itself; the store weighs the conditions."""
    headers = CIMultiDict({"Range": range_value} if range_value else {})
    headers["If-Match"] = '"anything"'  # never looked at here
    assert requested_ranges(method, headers, size=10) == decision
