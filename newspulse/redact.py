"""Keeping credentials out of logs and error messages (kernel: no dependencies).

URLs may carry credentials (``https://user:secret@host/rss`` or ``?api_key=...``). Every log line
from ``ingest`` goes through :class:`RedactingFilter`, every :class:`~newspulse.ingest.fetch.FetchError` reason
and every error the dashboard shows through :func:`redact`, so neither userinfo nor
credential-like query values reach a log, the ``--once`` summary, a metric label or a page. httpx's own INFO line (``HTTP Request: GET <raw url>``)
is silenced by :mod:`newspulse.ingest.fetch`, which logs the redacted URL itself.
"""

from __future__ import annotations

import logging
import re

MASK = "***"
CREDENTIAL_PARAMS = (
    "key", "apikey", "api_key", "api-key", "token", "access_token", "auth", "auth_token", "password", "passwd", "pwd",
    "secret", "client_secret", "sig", "signature", "session", "sessionid", "x-amz-signature", "x-amz-credential",
)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s?#@]+@")
_PARAM = re.compile(r"(?i)([?&;](?:" + "|".join(re.escape(p) for p in CREDENTIAL_PARAMS) + r")=)[^&;#\s'\"]*")


def redact(text: str) -> str:
    """``text`` with the userinfo of every URL in it and credential-like query values masked."""
    return _PARAM.sub(lambda m: m.group(1) + MASK, _USERINFO.sub(lambda m: m.group(1) + MASK + "@", text))


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (and traceback) with :func:`redact` before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def get_logger(name: str) -> logging.Logger:
    """A module logger whose records are redacted (logger filters apply to their own records only)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())
    return logger
