"""Logging, configured once at the edge (the CLI): console lines on a terminal, JSON otherwise.

Library code only binds context (`run_id=`, `cluster=`, `wave=`). The redaction processor runs
on every event, whichever renderer follows it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from wavegate import redact


def configure(*, fmt: str, verbose: bool = False, stream: TextIO | None = None) -> None:
    """`fmt` is `json` or `console`."""
    output = stream or sys.stderr
    renderer: Any = (structlog.processors.JSONRenderer() if fmt == "json"
                     else structlog.dev.ConsoleRenderer(colors=output.isatty()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,  # render tracebacks before they are scrubbed
            redact.processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if verbose else logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(output),
        cache_logger_on_first_use=False,
    )


def quiet() -> None:
    """Only warnings and errors (the live table shows the rest)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
