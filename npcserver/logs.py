"""Logging setup: plain text lines or one JSON object per line (``log_format``), on stderr.

With JSON, every record is one object with ``time``, ``level``, ``logger`` and ``message``, plus the fields a
record carries in ``extra``: the request log (``npcserver.requests``) puts each request's id, door, method,
persona, conversation, status, tokens and timings there, so a log search by the id a game saw in a stream message
finds the request.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    """Sets up the root logger once, before the heavy imports, so their start-up is logged too."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
