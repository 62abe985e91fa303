"""structlog set-up: JSON lines in production, readable lines in a terminal.

The standard library's loggers (aiohttp's access log, botocore) go through the
same renderer, so an operator's log shipper sees one format.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

Format = Literal["auto", "json", "console"]


def renders_json(log_format: Format) -> bool:
    """JSON lines, or readable ones: `auto` writes JSON unless stderr is a terminal."""
    return log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())


def configure_logging(log_format: Format = "auto", level: int = logging.INFO) -> None:
    use_json = renders_json(log_format)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("botocore", "aiobotocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
