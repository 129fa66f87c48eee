"""The secret values this process knows, and the one way every text we build is cleaned of them.

Pure: no I/O, no Airflow. Secret keys, session tokens and assumed-role credentials are
registered where they enter the process (a connection's settings, each AssumeRole
answer); every exception of ours (:class:`~airflow_s3connect.errors.S3ConnectError`),
every store message we quote and every record of our loggers and botocore's request
loggers passes through :func:`redact`. Airflow masks task logs too, but our messages
also reach the Test button, ``s3connect check``, trigger and asset events, and handlers
outside Airflow's.
"""

from __future__ import annotations

import logging
import re
import threading

#: Values under this length are not registered: no real key or token is that short, and
#: masking "s" would mangle every line.
MIN_LENGTH = 8
#: Only the newest are kept, so a triggerer refreshing assumed credentials for days does
#: not grow without bound.
KEEP = 1000
MASK = "***"
#: Credentials in an STS answer, before anyone could register them.
_STS_SECRETS = re.compile(r"<(SecretAccessKey|SessionToken)>[^<]*</\1>")

_lock = threading.Lock()
_secrets: dict[str, None] = {}


def register(*secrets: str | None) -> None:
    """Remember secret values (a secret key, a session token, an SSE-C key)."""
    with _lock:
        for secret in secrets:
            if secret and len(secret) >= MIN_LENGTH:
                _secrets.pop(secret, None)
                _secrets[secret] = None
        while len(_secrets) > KEEP:
            del _secrets[next(iter(_secrets))]


def known() -> list[str]:
    """The registered values, longest first (a token containing a key is masked whole)."""
    with _lock:
        return sorted(_secrets, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every known secret replaced by ``***``."""
    for secret in known():
        if secret in text:
            text = text.replace(secret, MASK)
    return _STS_SECRETS.sub(rf"<\1>{MASK}</\1>", text)


def holds_secret(text: str) -> bool:
    """Whether ``text`` contains a known secret (a store message that echoes one is dropped whole)."""
    return redact(text) != text


class RedactingFilter(logging.Filter):
    """A logging filter applying :func:`redact` to each record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        original = record.getMessage()
        cleaned = redact(original)
        if cleaned != original:
            record.msg, record.args = cleaned, None
        return True


FILTER = RedactingFilter()

#: Loggers whose records may carry a request's headers (the session token is one), a
#: response body (STS AssumeRole's), or a message of ours quoting a store.
LOGGERS = (
    "airflow_s3connect",
    "botocore.auth",
    "botocore.endpoint",
    "botocore.httpsession",
    "botocore.awsrequest",
    "botocore.parsers",
    "botocore.hooks",
    "botocore.retryhandler",
    "s3transfer",
)


def install() -> None:
    """Put :data:`FILTER` on :data:`LOGGERS` (idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if FILTER not in logger.filters:
            logger.addFilter(FILTER)
