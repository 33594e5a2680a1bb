"""Log set-up of every NewsPulse process: human-readable text, or one JSON object a line.

Text lines escape control characters in the message (``\n`` becomes the two characters ``\\n``),
so a value from outside (a ticker, a title, a receiver's error) can never start a line of its
own and pass for a record the process did not write. A traceback still follows its record on
lines of its own: it is the formatter's, not the message's.

JSON (``NEWSPULSE_LOG_FORMAT=json``) is for log shippers (Loki, Elasticsearch, CloudWatch): each
line parses on its own, multi-line tracebacks stay inside their record, and fields passed with
``extra=`` become keys, so nobody has to write a regex over the message.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Literal

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: C0/C1 controls and the Unicode line breaks, each shown as its Python escape in text lines.
_ESCAPES = {c: repr(chr(c))[1:-1] for c in [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]}
#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, extras."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
        }
        doc.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT`` with control characters in the line escaped: one record, one line
    (followed by its traceback, if any)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's naming)
        return super().formatMessage(record).translate(_ESCAPES)


def configure_logging(level: str, fmt: Literal["text", "json"] = "text") -> None:
    """Configure the root logger once per process (later calls change nothing, like basicConfig)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
