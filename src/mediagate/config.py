"""Settings, read from the environment and from `.env` in the working directory.

The original guide's variable names (USE_CLOUD_STORAGE, AWS_*, CDN_BASE_URL,
SIGNED_URL_EXPIRY) are kept unchanged; everything mediagate adds is prefixed
MEDIAGATE_ (apart from AWS_S3_ENDPOINT_URL, which sits with its AWS siblings).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MiB = 1024 * 1024
GiB = 1024 * MiB
DEFAULT_DATA_DIR = Path("data")
# S3's part sizes: every part but the last at least 5 MiB, none above 5 GiB.
S3_MIN_PART = 5 * MiB
S3_MAX_PART = 5 * GiB
# S3's largest object (10,000 parts of 5 GiB); also the most a chunk plan can hold.
S3_MAX_OBJECT_SIZE = 10_000 * S3_MAX_PART
# HS256 keys shorter than the hash (32 bytes) are guessable offline from one token.
MIN_JWT_SECRET_BYTES = 32
# AWS bucket naming rules: 3-63 lowercase letters, digits, dots and hyphens,
# starting and ending with a letter or digit (MinIO follows them too).
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # fullmatch: no final newline


# A size: a number of bytes, optionally with a unit. IEC units (KiB, MiB, GiB, TiB)
# count in 1024s, SI units (kB, MB, GB, TB) in 1000s. A lone K, M, G or T is refused:
# some tools read `8M` as MiB, others as MB, and a guess would be off by 5 %.
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)[ \t]*([A-Za-z]*)")
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kib": 1024,
    "mib": MiB,
    "gib": GiB,
    "tib": 1024 * GiB,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
}


def parse_size(value: object) -> object:
    """`16MiB`, `1.5 GiB`, `500MB` or `1048576` (bytes) as a number of bytes.

    Anything but a string is left to the field's own validation."""
    if not isinstance(value, str):
        return value
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        raise ValueError("must be a size such as 16MiB, 500MB or a number of bytes")
    number, unit = match.groups()
    if unit.lower() not in _SIZE_UNITS:
        raise ValueError(
            f"unknown unit {unit!r}: use B, KiB, MiB, GiB, TiB (powers of 1024) "
            "or kB, MB, GB, TB (powers of 1000)"
        )
    whole, _, fraction = number.partition(".")
    factor = _SIZE_UNITS[unit.lower()]
    scale = 10 ** len(fraction)
    numerator = int(whole + fraction) * factor
    if numerator % scale:
        raise ValueError(f"{value.strip()} is not a whole number of bytes")
    return numerator // scale


# A setting counted in bytes, written with or without a unit.
ByteSize = Annotated[int, BeforeValidator(parse_size)]


def format_size(size: int) -> str:
    """A size for people, in IEC units: `8 MiB`, `1.5 GiB`, `300 B`."""
    for unit, factor in (("TiB", 1024 * GiB), ("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if size >= factor:
            number = size / factor
            return f"{number:.4g} {unit}" if number < 1000 else f"{number:.0f} {unit}"
    return f"{size} B"


def env(name: str) -> AliasChoices:
    """Bind a field to exactly one environment variable name."""
    return AliasChoices(name)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    use_cloud_storage: bool = Field(False, validation_alias=env("USE_CLOUD_STORAGE"))
    cloud_storage_provider: Literal["s3"] = Field(
        "s3", validation_alias=env("CLOUD_STORAGE_PROVIDER")
    )
    s3_bucket: str | None = Field(None, validation_alias=env("AWS_S3_BUCKET_NAME"))
    s3_region: str = Field("us-east-1", validation_alias=env("AWS_S3_REGION"))
    s3_endpoint_url: str | None = Field(None, validation_alias=env("AWS_S3_ENDPOINT_URL"))
    # Where clients of direct uploads reach the store, if not at AWS_S3_ENDPOINT_URL
    # (the server on an internal address, clients on a public one): the part URLs
    # it signs point there.
    direct_endpoint_url: str | None = Field(
        None, validation_alias=env("MEDIAGATE_S3_DIRECT_ENDPOINT_URL")
    )
    # Unset: the default AWS credential chain (IAM role, ~/.aws, ...) is used.
    aws_access_key_id: str | None = Field(None, validation_alias=env("AWS_ACCESS_KEY_ID"))
    aws_secret_access_key: SecretStr | None = Field(
        None, validation_alias=env("AWS_SECRET_ACCESS_KEY")
    )
    # Too long and a leaked link plays for that long; too short and a paused
    # player's next Range request fails once the URL has expired.
    signed_url_expiry: int = Field(3600, gt=0, validation_alias=env("SIGNED_URL_EXPIRY"))
    cdn_base_url: str | None = Field(None, validation_alias=env("CDN_BASE_URL"))
    # How players get S3 media: "redirect" to a presigned URL (or the CDN), so
    # the bytes bypass this server; "proxy" streams them through it, passing
    # Range and conditional headers on to S3, for private endpoints players
    # cannot reach and for playback longer than SIGNED_URL_EXPIRY.
    # Media that fell back to local disk moves to S3 by itself once S3 is
    # healthy (verified as `mediagate migrate` does, the local copy removed).
    # Off: it stays local until an operator runs `mediagate migrate`.
    auto_migrate: bool = Field(False, validation_alias=env("MEDIAGATE_AUTO_MIGRATE"))
    stream_mode: Literal["redirect", "proxy"] = Field(
        "redirect", validation_alias=env("MEDIAGATE_STREAM_MODE")
    )
    # Keys never change (a new upload gets a new media id), so clients and CDNs
    # may cache an object for as long as they like.
    cache_control: str = Field(
        "max-age=31536000, immutable", validation_alias=env("MEDIAGATE_CACHE_CONTROL")
    )
    # Unset sends no storage class (STANDARD); INTELLIGENT_TIERING suits media
    # that is watched a lot at first and rarely later, but not every
    # S3-compatible store accepts it.
    storage_class: str | None = Field(None, validation_alias=env("MEDIAGATE_STORAGE_CLASS"))

    # After S3 fails, calls go to local disk at once; S3 is probed again after
    # 1 s, then at doubling intervals up to this ceiling. Lower means S3 is
    # back in use sooner after an outage, at the cost of more probes during one.
    s3_probe_max_interval: float = Field(
        30.0, gt=0, validation_alias=env("MEDIAGATE_S3_PROBE_MAX_INTERVAL")
    )

    data_dir: Path = Field(DEFAULT_DATA_DIR, validation_alias=env("MEDIAGATE_DATA_DIR"))
    # With S3 on, what an S3 outage does. On: sessions start on local disk and
    # chunks S3 refuses are kept there (no upload fails), so several instances
    # need MEDIAGATE_DATA_DIR on one shared volume. Off: initiate and chunks are
    # answered 503 storage-unavailable (Retry-After) until S3 is back, and no
    # upload's bytes touch local disk: instances need no shared volume.
    fallback: bool = Field(True, validation_alias=env("MEDIAGATE_FALLBACK"))
    # Free space the data directory's disk keeps: below it /readyz answers 503,
    # new local sessions and chunks written to local disk are refused 507 (a
    # spill 503: S3 may take the chunk later). The SQLite catalog, and every
    # other user's uploads, need that room. 0: only a full disk counts.
    min_free_disk: ByteSize = Field(GiB, ge=0, validation_alias=env("MEDIAGATE_MIN_FREE_DISK"))
    # postgresql://user:password@host:port/database: the catalog lives in
    # PostgreSQL, shared by every instance. Unset: SQLite in the data directory.
    database_url: SecretStr | None = Field(None, validation_alias=env("MEDIAGATE_DATABASE_URL"))
    # Connections each process keeps to PostgreSQL at most. Too small and
    # requests queue for a connection; too large and N instances exceed the
    # server's max_connections (or pgbouncer's pool).
    database_pool_size: int = Field(
        10, ge=1, le=1000, validation_alias=env("MEDIAGATE_DATABASE_POOL_SIZE")
    )
    # Seconds a request waits for a PostgreSQL connection before it is answered
    # 503 catalog-unavailable. While the server is down every request takes this
    # long to fail; too small and a burst of requests fails instead of queueing.
    database_timeout: float = Field(5.0, gt=0, validation_alias=env("MEDIAGATE_DATABASE_TIMEOUT"))
    jwt_secret: SecretStr | None = Field(None, validation_alias=env("MEDIAGATE_JWT_SECRET"))
    # The app's identity provider: tokens signed with its keys (RS256, ES256,
    # EdDSA) are taken beside mediagate's own HS256 ones. Unset: only ours.
    jwt_jwks_url: str | None = Field(None, validation_alias=env("MEDIAGATE_JWT_JWKS_URL"))
    # Checked on the identity provider's tokens when set (`iss`, `aud`).
    jwt_issuer: str | None = Field(None, validation_alias=env("MEDIAGATE_JWT_ISSUER"))
    jwt_audience: str | None = Field(None, validation_alias=env("MEDIAGATE_JWT_AUDIENCE"))
    # The claim of an identity provider's token that holds the user id.
    jwt_user_claim: str = Field(
        "sub", min_length=1, validation_alias=env("MEDIAGATE_JWT_USER_CLAIM")
    )
    # Seconds between two fetches of the key set at most. A token naming an
    # unknown key (a rotation) fetches it again, so too large delays a new
    # key's first use; too small lets tokens with made-up key ids hammer the
    # identity provider.
    jwt_jwks_refetch_interval: float = Field(
        30, gt=0, validation_alias=env("MEDIAGATE_JWT_JWKS_REFETCH_INTERVAL")
    )
    # Where events are sent as Standard Webhooks (docs/integration.md, "Events").
    # Unset: no event is written at all.
    webhook_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=env("MEDIAGATE_WEBHOOK_URL")
    )
    # The endpoints' signing secret, `whsec_` and base64.
    webhook_secret: SecretStr | None = Field(None, validation_alias=env("MEDIAGATE_WEBHOOK_SECRET"))
    # Seconds an event is retried (with back-off) before it is kept as dead.
    webhook_retry_for: float = Field(
        24 * 3600, gt=0, validation_alias=env("MEDIAGATE_WEBHOOK_RETRY_FOR")
    )
    # Seconds one delivery waits for the endpoint's answer: a receiver that never
    # answers holds one connection that long, and its events wait meanwhile.
    webhook_timeout: float = Field(15, gt=0, validation_alias=env("MEDIAGATE_WEBHOOK_TIMEOUT"))
    # Asked before an upload is created, and waited for (docs/integration.md, "Hooks").
    hook_pre_create_url: str | None = Field(
        None, validation_alias=env("MEDIAGATE_HOOK_PRE_CREATE_URL")
    )
    # Asked once an upload's bytes are stored and verified, before its media is ready.
    hook_pre_finish_url: str | None = Field(
        None, validation_alias=env("MEDIAGATE_HOOK_PRE_FINISH_URL")
    )
    # Seconds a hook waits for the application's decision: the client waits that long too.
    hook_timeout: float = Field(5, gt=0, validation_alias=env("MEDIAGATE_HOOK_TIMEOUT"))
    # What no decision (the application down, slow, or answering nonsense) means:
    # refuse (503 with Retry-After) or allow.
    hook_failure: Literal["refuse", "allow"] = Field(
        "refuse", validation_alias=env("MEDIAGATE_HOOK_FAILURE")
    )
    host: str = Field("127.0.0.1", validation_alias=env("MEDIAGATE_HOST"))
    port: int = Field(8080, ge=0, le=65535, validation_alias=env("MEDIAGATE_PORT"))
    public_url: str | None = Field(None, validation_alias=env("MEDIAGATE_PUBLIC_URL"))
    # The chunk size offered when a client asks for none. Larger chunks mean
    # fewer requests and S3 parts; smaller ones mean less to resend after a
    # dropped connection. Every upload plan follows S3's part rules (local ones
    # too), so a size outside 5 MiB..5 GiB could never be used and is refused;
    # it is raised per file when 10,000 chunks would not hold the file.
    chunk_size: ByteSize = Field(8 * MiB, validation_alias=env("MEDIAGATE_CHUNK_SIZE"))
    # How long an upload session may stay open before its parts are discarded.
    session_ttl: int = Field(24 * 3600, gt=0, validation_alias=env("MEDIAGATE_SESSION_TTL"))
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=env("MEDIAGATE_CORS_ORIGINS")
    )
    key_prefix: str = Field("media/", validation_alias=env("MEDIAGATE_KEY_PREFIX"))
    # S3 aborts multipart uploads left unfinished this many days after they
    # began (a bucket lifecycle rule under MEDIAGATE_KEY_PREFIX). Too small and
    # it discards parts of sessions still open, so it must exceed
    # MEDIAGATE_SESSION_TTL; too large and abandoned parts are billed for longer.
    # 0 leaves the bucket's lifecycle configuration alone.
    abort_incomplete_days: int = Field(
        7, ge=0, validation_alias=env("MEDIAGATE_ABORT_INCOMPLETE_DAYS")
    )
    # Seconds to open a connection to S3. Too small fails on a slow network; too
    # large delays start-up (and each fallback to local disk) while S3 is down.
    s3_connect_timeout: float = Field(5, gt=0, validation_alias=env("MEDIAGATE_S3_CONNECT_TIMEOUT"))
    # Seconds of silence from S3 before a call is given up. Too small cuts off
    # a slow CompleteMultipartUpload of a large file; too large holds a chunk
    # request that long before it falls back.
    s3_read_timeout: float = Field(60, gt=0, validation_alias=env("MEDIAGATE_S3_READ_TIMEOUT"))
    # Attempts of each small S3 call (create, complete, abort, head, delete),
    # with backoff. More ride out longer S3 hiccups but make a failing call
    # slower to report. Chunk uploads always make one attempt: a streamed body
    # cannot be sent twice.
    s3_max_attempts: int = Field(3, ge=1, le=10, validation_alias=env("MEDIAGATE_S3_MAX_ATTEMPTS"))
    # Seconds that SIGTERM waits for requests in flight (chunks being received)
    # before cancelling them. Too small cuts off uploads that clients must then
    # resend; too large outlasts the supervisor's stop timeout (systemd
    # TimeoutStopSec, Docker --stop-timeout: 45 s in deploy/), which then kills
    # the process without closing the catalog cleanly.
    shutdown_timeout: float = Field(30, gt=0, validation_alias=env("MEDIAGATE_SHUTDOWN_TIMEOUT"))
    # Seconds a request body may go without a single byte arriving before the
    # request is answered 408 and its chunk freed. Too small cuts off clients
    # on a stalling mobile link; too large lets a vanished client hold its
    # chunk (and complete, which waits for it) that long. A retry of the same
    # chunk does not wait for it: the newer attempt takes over at once.
    body_read_timeout: float = Field(60, gt=0, validation_alias=env("MEDIAGATE_BODY_READ_TIMEOUT"))
    # Seconds a connection may take to send a request's headers, counted from
    # when it opened or its previous answer was sent: it is also how long an idle
    # kept-alive connection stays open. Keep it above the idle timeout of a load
    # balancer in front (AWS ALB: 60 s, nginx upstream keepalive: 60 s), or the
    # balancer may send a request on a connection this server is closing.
    header_timeout: float = Field(75, gt=0, validation_alias=env("MEDIAGATE_HEADER_TIMEOUT"))
    # Processes serving the port (`serve --workers`). Each takes a core: more
    # than the machine's cores only adds context switches.
    workers: int = Field(1, ge=1, validation_alias=env("MEDIAGATE_WORKERS"))
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", validation_alias=env("MEDIAGATE_LOG_FORMAT")
    )
    # Open upload sessions one user may hold; each holds a staging file or an S3
    # multipart upload until it completes, is aborted or expires. Too small
    # refuses a client uploading many files in parallel (429, Retry-After);
    # too large lets one user tie up disk and S3 uploads for a whole TTL.
    max_open_sessions_per_user: int = Field(
        100, ge=1, validation_alias=env("MEDIAGATE_MAX_OPEN_SESSIONS_PER_USER")
    )
    # Bytes one user's tus PATCHes without Content-Length (chunked) may hold in this
    # process's memory at once: such a body is gathered a part (5 MiB) at a time,
    # since S3 takes a part only with its length. Beyond it such a PATCH answers 429
    # with Retry-After (a PATCH with Content-Length holds nothing). Too small: fewer
    # chunked PATCHes of a user at once; too large: one user's stalled bodies can
    # take the server's memory (100 open uploads x 5 MiB).
    tus_memory_per_user: ByteSize = Field(
        32 * MiB, ge=MiB, validation_alias=env("MEDIAGATE_TUS_MEMORY_PER_USER")
    )
    # Probe every finished media with ffprobe (docs/media.md): facts, a poster, policy.
    probe: bool = Field(True, validation_alias=env("MEDIAGATE_PROBE"))
    # Probes running at once in this process, each a child process (about a core and up
    # to MEDIAGATE_PROBE_MEMORY each). Too many starve the uploads of CPU; too few make
    # complete wait for other uploads' probes.
    probe_concurrency: int = Field(2, ge=1, validation_alias=env("MEDIAGATE_PROBE_CONCURRENCY"))
    # Seconds a probe (and the poster's frame) may run before it is killed and the media
    # kept with probe_error. A probe of a remote object waits on S3 too.
    probe_timeout: float = Field(30, gt=0, validation_alias=env("MEDIAGATE_PROBE_TIMEOUT"))
    # Address space a probe may take: a hostile file that makes a demuxer allocate
    # without end is stopped here.
    probe_memory: ByteSize = Field(
        1024 * MiB, ge=16 * MiB, validation_alias=env("MEDIAGATE_PROBE_MEMORY")
    )
    # What kinds of media an upload may be (video, audio, image), by what probing
    # says; empty: anything, probed or not. Refused at finish as `not-media` (415).
    accept: Annotated[list[Literal["video", "audio", "image"]], NoDecode] = Field(
        default_factory=list, validation_alias=env("MEDIAGATE_ACCEPT")
    )
    # Longest duration (seconds) a media may have, refused at finish as `not-media`.
    max_duration: float | None = Field(None, gt=0, validation_alias=env("MEDIAGATE_MAX_DURATION"))
    # Largest declared file size an upload may have: 413 at initiate or tus creation,
    # before any byte is stored (tus advertises it as Tus-Max-Size).
    max_upload_size: ByteSize = Field(
        S3_MAX_OBJECT_SIZE,
        gt=0,
        le=S3_MAX_OBJECT_SIZE,
        validation_alias=env("MEDIAGATE_MAX_UPLOAD_SIZE"),
    )

    @field_validator("cors_origins", "webhook_urls", "accept", mode="before")
    @classmethod
    def split_comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("chunk_size")
    @classmethod
    def chunk_size_is_a_part_size(cls, value: int) -> int:
        if not S3_MIN_PART <= value <= S3_MAX_PART:
            raise ValueError(
                f"{format_size(value)} is not a chunk size: chunks are S3 parts (local "
                "uploads follow the same plan), 5 MiB to 5 GiB, e.g. 8MiB"
            )
        return value

    @field_validator("jwt_secret")
    @classmethod
    def secret_is_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < MIN_JWT_SECRET_BYTES:
            raise ValueError(
                f"must be at least {MIN_JWT_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`), "
                "or unset to have one generated in MEDIAGATE_DATA_DIR"
            )
        return value

    @field_validator("database_url", mode="before")
    @classmethod
    def postgresql_url(cls, value: object) -> object:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value == "":  # set but empty, as templates leave it: SQLite
            return None
        if isinstance(value, str) and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql://user:password@host:port/database URL")
        return value

    @field_validator("key_prefix")
    @classmethod
    def prefix_is_a_folder(cls, value: str) -> str:
        value = value.strip("/")
        if ".." in value.split("/"):
            raise ValueError("must not contain '..'")
        return f"{value}/" if value else ""

    @field_validator("jwt_jwks_url")
    @classmethod
    def jwks_url_is_absolute(cls, value: str | None) -> str | None:
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    "must be an http(s) URL, e.g. https://id.example.com/.well-known/jwks.json"
                )
        return value or None

    @field_validator("webhook_urls")
    @classmethod
    def webhook_urls_are_absolute(cls, value: list[str]) -> list[str]:
        for url in value:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    f"{url!r} is not an http(s) URL, e.g. https://app.example.com/hooks"
                )
        return value

    @field_validator("direct_endpoint_url", mode="before")
    @classmethod
    def direct_endpoint_is_absolute(cls, value: object) -> object:
        if value == "" or value is None:
            return None
        parts = urlsplit(str(value))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL, e.g. https://s3.example.com")
        return value

    @field_validator("hook_pre_create_url", "hook_pre_finish_url", mode="before")
    @classmethod
    def hook_url_is_absolute(cls, value: object) -> object:
        if value == "" or value is None:
            return None
        parts = urlsplit(str(value))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL, e.g. https://app.example.com/pre")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def webhook_secret_is_whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _is_whsec(value.get_secret_value()):
            raise ValueError("must be whsec_ followed by a base64 key of 24 bytes or more")
        return value

    @field_validator("jwt_issuer", "jwt_audience", mode="before")
    @classmethod
    def empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("cdn_base_url", "public_url")
    @classmethod
    def no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @field_validator("public_url")
    @classmethod
    def public_url_is_absolute(cls, value: str | None) -> str | None:
        """Every link handed out starts with it: a typo must not make them all relative."""
        if value:
            parts = urlsplit(value)
            if not _is_origin(f"{parts.scheme}://{parts.netloc}") or parts.query or parts.fragment:
                raise ValueError(
                    "must be http(s)://host[:port][/path], e.g. https://media.example.com"
                )
        return value

    @field_validator("cors_origins")
    @classmethod
    def origins_are_origins(cls, value: list[str]) -> list[str]:
        """Browsers send `scheme://host[:port]` and nothing more: anything else never matches
        (a trailing slash is dropped, for the API and the bucket alike)."""
        origins = [origin.rstrip("/") if origin != "*" else origin for origin in value]
        for origin in origins:
            if origin != "*" and not _is_origin(origin):
                raise ValueError(
                    f"{origin!r} is not * or an origin such as https://app.example.com"
                )
        return origins


def _is_whsec(secret: str) -> bool:
    if not secret.startswith("whsec_"):
        return False
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        return False
    return len(key) >= 24


def _is_origin(text: str) -> bool:
    """`text` is `http(s)://host[:port]`, nothing before or after."""
    try:
        parts = urlsplit(text)
        port_is_valid = parts.port is None or parts.port > 0
    except ValueError:  # a port that is no number, or out of range
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and "@" not in parts.netloc
        and not parts.path
        and not parts.query
        and not parts.fragment
        and port_is_valid
    )


def env_names() -> dict[str, str]:
    """Field name -> the environment variable that sets it."""
    names = {}
    for name, field in Settings.model_fields.items():
        assert isinstance(field.validation_alias, AliasChoices)
        names[name] = str(field.validation_alias.choices[0])
    return names


# Never echoed in an error message: it would end up in a terminal or a log.
# (A database URL may carry a password.)
SECRET_VARIABLES = frozenset(
    {
        "MEDIAGATE_JWT_SECRET",
        "AWS_SECRET_ACCESS_KEY",
        "MEDIAGATE_DATABASE_URL",
        "MEDIAGATE_WEBHOOK_SECRET",
    }
)


class SettingsError(Exception):
    """A bad setting, described in one line that names the variable."""


def load_settings(**overrides: Any) -> Settings:
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        names = env_names()
        lines = []
        for problem in error.errors():
            field = str(problem["loc"][0]) if problem["loc"] else ""
            name = names.get(field, field)
            value = "<hidden>" if name in SECRET_VARIABLES else repr(problem.get("input"))
            lines.append(f"{name}={value}: {problem['msg']}")
        raise SettingsError("invalid setting " + "; ".join(lines)) from None
    if settings.use_cloud_storage and not settings.s3_bucket:
        raise SettingsError(
            "invalid setting AWS_S3_BUCKET_NAME: required when USE_CLOUD_STORAGE=true"
        )
    if settings.use_cloud_storage and not is_valid_bucket_name(settings.s3_bucket or ""):
        raise SettingsError(
            f"invalid setting AWS_S3_BUCKET_NAME={settings.s3_bucket!r}: S3 bucket names are "
            "3-63 lowercase letters, digits, dots and hyphens, starting and ending with a "
            "letter or digit"
        )
    if settings.database_url is not None and settings.jwt_secret is None:
        raise SettingsError(
            "invalid setting MEDIAGATE_JWT_SECRET: required when MEDIAGATE_DATABASE_URL is set, "
            "so that every instance sharing the catalog accepts the same tokens"
        )
    for claim, checked in (("ISSUER", settings.jwt_issuer), ("AUDIENCE", settings.jwt_audience)):
        if checked is not None and settings.jwt_jwks_url is None:
            raise SettingsError(
                f"invalid setting MEDIAGATE_JWT_{claim}: it is checked on the identity "
                "provider's tokens, so it needs MEDIAGATE_JWT_JWKS_URL"
            )
    if settings.webhook_urls and settings.webhook_secret is None:
        raise SettingsError(
            "invalid setting MEDIAGATE_WEBHOOK_SECRET: required when MEDIAGATE_WEBHOOK_URL is "
            "set, so that receivers can tell mediagate's events from forged ones"
        )
    if (settings.hook_pre_create_url or settings.hook_pre_finish_url) and (
        settings.webhook_secret is None
    ):
        raise SettingsError(
            "invalid setting MEDIAGATE_WEBHOOK_SECRET: required when a MEDIAGATE_HOOK_*_URL "
            "is set, as hooks are signed like the webhooks"
        )
    lifecycle_seconds = settings.abort_incomplete_days * 24 * 3600
    if settings.use_cloud_storage and 0 < lifecycle_seconds <= settings.session_ttl:
        raise SettingsError(
            f"invalid setting MEDIAGATE_ABORT_INCOMPLETE_DAYS={settings.abort_incomplete_days}: "
            f"must be longer than MEDIAGATE_SESSION_TTL={settings.session_ttl} s, or S3 "
            "discards parts of sessions still open (0 turns the rule off)"
        )
    return settings


def uses_local_disk(settings: Settings) -> bool:
    """Whether uploads (or the SQLite catalog) may write to MEDIAGATE_DATA_DIR."""
    return not settings.use_cloud_storage or settings.fallback or settings.database_url is None


def needs_shared_volume(settings: Settings) -> bool:
    """Whether instances on one PostgreSQL catalog must share MEDIAGATE_DATA_DIR: local
    media and spilled chunks written by one are finished and served by the others."""
    return not settings.use_cloud_storage or settings.fallback


def is_valid_bucket_name(name: str) -> bool:
    if not _BUCKET_NAME.fullmatch(name) or ".." in name:
        return False
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return True
    return False  # S3 refuses names formatted as an IP address
