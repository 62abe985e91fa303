"""How to answer a GET or HEAD for a stored file: RFC 9110 conditionals and byte ranges.

Pure functions, no I/O. `decide()` reads the method, the request's header fields and
the file's validators and size, and returns one small value saying what to send;
`file_response.py` does the sending. Section numbers refer to RFC 9110.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal, TypeAlias

from multidict import MultiMapping

# A Range asking for more parts than this is served as a plain 200: players ask for one
# or two ranges, and a long list is a broken client or an attempt to make us do many
# small sends (§14.2 lets a server ignore Range for exactly this).
MAX_RANGES: Final = 16
# Likewise when the requested parts add up to more than this many copies of the file
# (heavily overlapping ranges, §14.2).
MAX_COPIES: Final = 2

# Positions with more digits than this are beyond any file; capping keeps int() away
# from digit strings long enough to be slow or to hit Python's int parsing limit.
_MAX_DIGITS: Final = 18
_BEYOND_ANY_FILE: Final = 10**_MAX_DIGITS

_SAFE_METHODS: Final = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class EntityTag:
    """An entity-tag (§8.8.3): the opaque tag with its double quotes, and whether it is weak."""

    opaque: str
    weak: bool = False

    @classmethod
    def parse(cls, value: str) -> EntityTag:
        """Parse `"xyz"` or `W/"xyz"`; raise ValueError for anything else."""
        match = _ENTITY_TAG.fullmatch(value.strip(" \t"))
        if match is None:
            raise ValueError(f"not an entity-tag: {value!r}")
        return cls(match[2], weak=match[1] is not None)

    def __str__(self) -> str:
        return f"W/{self.opaque}" if self.weak else self.opaque


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes `start` up to, not including, `stop` of the file."""

    start: int
    stop: int

    @property
    def length(self) -> int:
        return self.stop - self.start

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.stop - 1}/{size}"  # §14.4


@dataclass(frozen=True, slots=True)
class SendWhole:
    """200 with the whole file; also every answer to HEAD that is not 304 or 412."""


@dataclass(frozen=True, slots=True)
class SendRange:
    """206 with one range and a Content-Range header (§15.3.7.1)."""

    range: ByteRange


@dataclass(frozen=True, slots=True)
class SendRanges:
    """206 multipart/byteranges (§14.6): two or more disjoint, non-adjacent ranges."""

    ranges: tuple[ByteRange, ...]


@dataclass(frozen=True, slots=True)
class NotModified:
    """304 (§15.4.5): the client's copy is current."""


@dataclass(frozen=True, slots=True)
class PreconditionFailed:
    """412 (§15.5.13): If-Match or If-Unmodified-Since does not hold."""


@dataclass(frozen=True, slots=True)
class RangeNotSatisfiable:
    """416 (§15.5.17) with `Content-Range: bytes */size`."""

    size: int


Decision: TypeAlias = (
    SendWhole | SendRange | SendRanges | NotModified | PreconditionFailed | RangeNotSatisfiable
)


def decide(
    method: str,
    headers: MultiMapping[str],
    *,
    size: int,
    etag: EntityTag,
    last_modified: float,
    now: float,
) -> Decision:
    """Decide the answer to `method` with request `headers` for a file of `size` bytes.

    `etag` and `last_modified` (seconds since the epoch) are the file's validators;
    `now` is the time the response is generated, for §8.8.2.2 (a Last-Modified within
    the current second is only a weak validator).
    """
    modified_second = int(last_modified)  # HTTP dates have whole seconds (§5.6.7)
    precondition = _evaluate_preconditions(method, headers, etag, modified_second, now)
    if precondition is not None:
        return precondition
    # §14.2: GET is the only method with range handling; HEAD answers as a 200 GET would.
    if method != "GET":
        return SendWhole()
    range_value = _single_field(headers, "Range")
    if range_value is None:
        return SendWhole()
    if not _if_range_holds(headers, etag, last_modified, now):
        return SendWhole()  # §13.1.5: the client's partial copy is stale; send it all
    return _select_ranges(range_value, size)


RangeDecision: TypeAlias = SendWhole | SendRange | SendRanges | RangeNotSatisfiable


def requested_ranges(method: str, headers: MultiMapping[str], *, size: int) -> RangeDecision:
    """What the Range of `headers` selects in a file of `size` bytes, as `decide()` would
    choose it once the conditions hold: for a store that weighs the conditions (and
    If-Range) itself but must not be left to answer odd ranges its own way (proxy mode).
    """
    if method != "GET":
        return SendWhole()
    range_value = _single_field(headers, "Range")
    if range_value is None:
        return SendWhole()
    return _select_ranges(range_value, size)


# --- Conditional requests (§13) ---------------------------------------------------------


def _evaluate_preconditions(
    method: str, headers: MultiMapping[str], etag: EntityTag, modified_second: int, now: float
) -> NotModified | PreconditionFailed | None:
    """Apply If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since in §13.2.2 order."""
    if_match = _list_field(headers, "If-Match")
    if if_match is not None:
        if not _any_matches(if_match, etag, strong=True):  # §13.1.1: strong comparison
            return PreconditionFailed()
    else:
        # §13.1.4: only without If-Match; an invalid date is ignored.
        unmodified_since = _date_field(headers, "If-Unmodified-Since", now)
        if unmodified_since is not None and modified_second > unmodified_since:
            return PreconditionFailed()

    if_none_match = _list_field(headers, "If-None-Match")
    if if_none_match is not None:
        if _any_matches(if_none_match, etag, strong=False):  # §13.1.2: weak comparison
            return NotModified() if method in _SAFE_METHODS else PreconditionFailed()
    elif method in _SAFE_METHODS:
        # §13.1.3: only for GET/HEAD and only without If-None-Match; invalid dates ignored.
        modified_since = _date_field(headers, "If-Modified-Since", now)
        if modified_since is not None and modified_second <= modified_since:
            return NotModified()
    return None


def _if_range_holds(
    headers: MultiMapping[str], etag: EntityTag, last_modified: float, now: float
) -> bool:
    """Evaluate If-Range (§13.1.5); true when absent."""
    values = headers.getall("If-Range", ())
    if not values:
        return True
    if len(values) > 1:
        return False  # §13.1.5 step 3: not a valid validator, so the condition is false
    value = values[0].strip(" \t")
    if value.startswith(('"', 'W/"')):
        try:
            validator = EntityTag.parse(value)
        except ValueError:
            return False
        return _strong_match(validator, etag)  # §13.1.5 step 1: strong comparison
    # §13.1.5 step 2: a date must equal Last-Modified exactly, and Last-Modified must be
    # a strong validator: at least a second older than the response's Date (§8.8.2.2).
    date = parse_http_date(value, now=now)
    return date is not None and date == int(last_modified) and last_modified + 1 <= now


def _any_matches(candidates: _EntityTagList, etag: EntityTag, *, strong: bool) -> bool:
    """Whether a parsed If-Match/If-None-Match value matches the current entity-tag."""
    if isinstance(candidates, str):
        return True  # `*` matches any current representation, and this one exists
    if strong:
        return any(_strong_match(candidate, etag) for candidate in candidates)
    return any(candidate.opaque == etag.opaque for candidate in candidates)  # §8.8.3.2


def _strong_match(a: EntityTag, b: EntityTag) -> bool:
    return not a.weak and not b.weak and a.opaque == b.opaque  # §8.8.3.2


# --- Header field parsing ----------------------------------------------------------------

_ETAG_CHARS = r'[^\x00-\x20"\x7f]*'  # etagc (§8.8.3): visible ASCII except DQUOTE, obs-text
_ANY_TAG: Final = "*"
_EntityTagList: TypeAlias = tuple[EntityTag, ...] | Literal["*"]

_ENTITY_TAG = re.compile(rf'(W/)?("{_ETAG_CHARS}")')
_ETAG_LIST_ELEMENT = re.compile(rf'[ \t]*(?:(W/)?("{_ETAG_CHARS}"))?[ \t]*(?:,|\Z)')


def _single_field(headers: MultiMapping[str], name: str) -> str | None:
    """The value of a field that must appear once; None if absent or repeated."""
    values = headers.getall(name, ())
    return values[0] if len(values) == 1 else None


def _list_field(headers: MultiMapping[str], name: str) -> _EntityTagList | None:
    """An If-Match/If-None-Match field with all its lines combined (§5.3); None if absent."""
    values = headers.getall(name, ())
    return _parse_etag_list(", ".join(values)) if values else None


def _parse_etag_list(value: str) -> _EntityTagList:
    """Parse `*` or a list of entity-tags (§13.1.1); a malformed list matches nothing."""
    if value.strip(" \t") == _ANY_TAG:
        return _ANY_TAG
    tags: list[EntityTag] = []
    position = 0
    while position < len(value):
        element = _ETAG_LIST_ELEMENT.match(value, position)
        if element is None:
            return ()
        if element[2] is not None:
            tags.append(EntityTag(element[2], weak=element[1] is not None))
        position = element.end()
    return tuple(tags)


_DAY_NAMES = "Mon|Tue|Wed|Thu|Fri|Sat|Sun"
_LONG_DAY_NAMES = "Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday"
_MONTHS: Final = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_MONTH = "(" + "|".join(_MONTHS) + ")"
_TIME = "([0-9]{2}):([0-9]{2}):([0-9]{2})"
# §5.6.7: the preferred IMF-fixdate and the two obsolete forms recipients must accept.
_IMF_FIXDATE = re.compile(rf"(?:{_DAY_NAMES}), ([0-9]{{2}}) {_MONTH} ([0-9]{{4}}) {_TIME} GMT")
_RFC850_DATE = re.compile(rf"(?:{_LONG_DAY_NAMES}), ([0-9]{{2}})-{_MONTH}-([0-9]{{2}}) {_TIME} GMT")
_ASCTIME_DATE = re.compile(rf"(?:{_DAY_NAMES}) {_MONTH} ([0-9 ][0-9]) {_TIME} ([0-9]{{4}})")


def parse_http_date(value: str, *, now: float) -> int | None:
    """Seconds since the epoch for an HTTP-date (§5.6.7), or None if it is not one."""
    value = value.strip(" \t")
    if match := _IMF_FIXDATE.fullmatch(value):
        day, month, year, hour, minute, second = match.groups()
        full_year = int(year)
    elif match := _RFC850_DATE.fullmatch(value):
        day, month, year, hour, minute, second = match.groups()
        full_year = _expand_two_digit_year(int(year), now)
    elif match := _ASCTIME_DATE.fullmatch(value):
        month, day, hour, minute, second, year = match.groups()
        full_year = int(year)
    else:
        return None
    try:
        moment = datetime(
            full_year, _MONTHS[month], int(day), int(hour), int(minute), int(second), tzinfo=UTC
        )
    except ValueError:  # 30 Feb, hour 25, ...
        return None
    return int(moment.timestamp())


def _expand_two_digit_year(year: int, now: float) -> int:
    """§5.6.7: a year more than 50 years in the future is the latest such year in the past."""
    current_year = datetime.fromtimestamp(now, UTC).year
    full_year = current_year - current_year % 100 + year
    return full_year - 100 if full_year > current_year + 50 else full_year


def _date_field(headers: MultiMapping[str], name: str, now: float) -> int | None:
    """A date-valued field, or None if absent, repeated or not a valid HTTP-date."""
    value = _single_field(headers, name)
    return None if value is None else parse_http_date(value, now=now)


# --- Ranges (§14) ------------------------------------------------------------------------

_INT_RANGE = re.compile(r"([0-9]+)-([0-9]*)")
_SUFFIX_RANGE = re.compile(r"-([0-9]+)")


@dataclass(frozen=True, slots=True)
class _IntRange:
    first: int
    last: int | None


@dataclass(frozen=True, slots=True)
class _SuffixRange:
    length: int


def _parse_range(value: str) -> list[_IntRange | _SuffixRange] | None:
    """Parse a Range field value (§14.1.1); None if invalid or not in bytes (§14.2)."""
    unit, equals, range_set = value.strip(" \t").partition("=")
    if not equals or unit.lower() != "bytes":  # range units are case-insensitive (§14.1)
        return None
    specs: list[_IntRange | _SuffixRange] = []
    for element in range_set.split(","):
        element = element.strip(" \t")
        if not element:
            continue  # §5.6.1.2: empty list elements do not count
        if match := _INT_RANGE.fullmatch(element):
            first, last = match[1].lstrip("0"), match[2].lstrip("0")
            if match[2] and (len(last), last) < (len(first), first):
                return None  # §14.1.1: last-pos less than first-pos makes the set invalid
            specs.append(_IntRange(_position(first), _position(last) if match[2] else None))
        elif match := _SUFFIX_RANGE.fullmatch(element):
            specs.append(_SuffixRange(_position(match[1].lstrip("0"))))
        else:
            return None
    return specs or None


def _position(significant_digits: str) -> int:
    if len(significant_digits) > _MAX_DIGITS:
        return _BEYOND_ANY_FILE
    return int(significant_digits or "0")


def _select_ranges(value: str, size: int) -> RangeDecision:
    specs = _parse_range(value)
    if specs is None:
        return SendWhole()  # §14.2: an invalid Range or an unknown unit is ignored
    if len(specs) > MAX_RANGES:
        return SendWhole()
    if size == 0:
        return _select_on_empty_file(specs)

    satisfiable = [r for r in (_resolve(spec, size) for spec in specs) if r is not None]
    if not satisfiable:
        return RangeNotSatisfiable(size)  # §14.1.1, §15.5.17
    if len(satisfiable) == 1:
        return SendRange(satisfiable[0])
    if sum(r.length for r in satisfiable) > MAX_COPIES * size:
        return SendWhole()
    ranges = _coalesce(satisfiable)
    # §15.3.7.2: never a multipart response for a single range.
    return SendRange(ranges[0]) if len(ranges) == 1 else SendRanges(ranges)


def _select_on_empty_file(specs: list[_IntRange | _SuffixRange]) -> RangeDecision:
    """§14.1.1: on a zero-length file only a non-zero suffix-range is satisfiable.

    It selects the whole (empty) file, which a 206 cannot express (Content-Range needs
    first <= last), so that case gets the 200 a server may always send instead (§14.2).
    Every other range set on an empty file, `bytes=0-` included, is unsatisfiable: 416.
    """
    if any(isinstance(spec, _SuffixRange) and spec.length > 0 for spec in specs):
        return SendWhole()
    return RangeNotSatisfiable(0)


def _resolve(spec: _IntRange | _SuffixRange, size: int) -> ByteRange | None:
    """The bytes a range-spec selects in a non-empty file, or None if unsatisfiable (§14.1.1)."""
    if isinstance(spec, _SuffixRange):
        if spec.length == 0:
            return None  # `-0` selects nothing
        return ByteRange(max(size - spec.length, 0), size)
    if spec.first >= size:
        return None
    # A last-pos at or past the end means "to the end" (§14.1.2).
    stop = size if spec.last is None else min(spec.last + 1, size)
    return ByteRange(spec.first, stop)


def _coalesce(ranges: list[ByteRange]) -> tuple[ByteRange, ...]:
    """Merge overlapping and adjacent ranges (§15.3.7.2 allows it).

    The merged ranges keep the order in which their first part was requested, since a
    server SHOULD send parts in request order (§15.3.7.2).
    """
    by_start = sorted(enumerate(ranges), key=lambda item: item[1].start)
    merged: list[tuple[int, ByteRange]] = []
    for order, current in by_start:
        if merged and current.start <= merged[-1][1].stop:
            first_order, previous = merged[-1]
            stop = max(previous.stop, current.stop)
            merged[-1] = (min(first_order, order), ByteRange(previous.start, stop))
        else:
            merged.append((order, current))
    return tuple(byte_range for _, byte_range in sorted(merged, key=lambda item: item[0]))
