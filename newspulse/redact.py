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
from collections.abc import Iterable

MASK = "***"
CREDENTIAL_PARAMS = (
    "key", "apikey", "api_key", "api-key", "token", "access_token", "auth", "auth_token", "password", "passwd", "pwd",
    "secret", "client_secret", "sig", "signature", "session", "sessionid", "x-amz-signature", "x-amz-credential",
)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s?#@]+@")
_PARAM = re.compile(r"(?i)([?&;](?:" + "|".join(re.escape(p) for p in CREDENTIAL_PARAMS) + r")=)[^&;#\s'\"]*")


#: Shorter configured secrets are not masked: replacing every "ab" in a message hides nothing
#: worth hiding and garbles the rest.
MIN_SECRET_CHARS = 4


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the userinfo of every URL in it, credential-like query values and every
    value of ``secrets`` masked.

    ``secrets`` are configured values an error may quote (a webhook's header values, a
    password): each is masked whole, and so is each word after the first of a value like
    ``Bearer <token>``, since an error may quote the token alone."""
    text = _PARAM.sub(lambda m: m.group(1) + MASK, _USERINFO.sub(lambda m: m.group(1) + MASK + "@", text))
    for secret in _secret_forms(secrets):
        text = text.replace(secret, MASK)
    return text


def _secret_forms(secrets: Iterable[str]) -> list[str]:
    """The strings to mask for ``secrets``, longest first (a whole value before its token)."""
    forms: set[str] = set()
    for secret in secrets:
        forms.add(secret.strip())
        forms.update(secret.split()[1:])
    return sorted((f for f in forms if len(f) >= MIN_SECRET_CHARS), key=len, reverse=True)


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
