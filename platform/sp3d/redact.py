"""Credential redaction applied to everything the platform logs (params, tags, text/yaml artifacts).

Three rules: (1) a mapping key that looks like a credential (secret, password, token, access_key,
credential, api_key, private_key) has its value replaced; (2) ``scheme://user:pass@host`` loses its
``user:pass``; (3) any configured secret value (registered via `register_secrets`, plus the usual
credential environment variables) is replaced wherever it appears.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "***REDACTED***"
SENSITIVE_WORDS = r"secret|password|passwd|token|access[_-]?key|credential|api[_-]?key|private[_-]?key"
SENSITIVE_KEY = re.compile(SENSITIVE_WORDS, re.IGNORECASE)
URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s:@'\"]+:[^/\s@'\"]*@")
TEXT_ASSIGNMENT = re.compile(
    r"(?P<key>[\w.\-]*(?:" + SENSITIVE_WORDS + r")[\w.\-]*)(?P<sep>[\"']?\s*[:=]\s*)"
    r"(?P<value>\"[^\"\n]*\"|'[^'\n]*'|[^\s,;}\]]+)",
    re.IGNORECASE,
)
SECRET_ENV_VARS = (
    "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN",
    "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
)
MIN_SUBSTRING_SECRET = 6  # shorter secrets are only redacted when a whole value equals them

_registered: set[str] = set()


def register_secrets(values: Iterable[str]) -> None:
    """Remember secret values (e.g. ``Settings.secret_values()``) so `scrub` redacts them everywhere."""
    _registered.update(v for v in values if v)


def known_secrets(extra: Iterable[str] = ()) -> list[str]:
    """Registered secrets + credential env vars + ``extra``, longest first (so overlaps redact fully)."""
    values = set(_registered) | {os.environ[k] for k in SECRET_ENV_VARS if os.environ.get(k)}
    values |= {v for v in extra if v}
    return sorted(values, key=len, reverse=True)


def scrub_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Redact URL credentials, ``key: value`` / ``KEY=value`` credential assignments and secret values."""
    secret_list = known_secrets(secrets)
    if text in secret_list:
        return REDACTED
    out = URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    out = TEXT_ASSIGNMENT.sub(lambda m: f"{m.group('key')}{m.group('sep')}{REDACTED}", out)
    for secret in secret_list:
        if len(secret) >= MIN_SUBSTRING_SECRET:
            out = out.replace(secret, REDACTED)
    return out


def scrub(obj: Any, secrets: Iterable[str] = ()) -> Any:
    """Return a redacted copy of ``obj`` (nested dicts / lists / tuples / strings; other scalars as is).

    Values under credential-looking keys become ``REDACTED``; strings go through `scrub_text`.
    """
    secret_list = known_secrets(secrets)
    if isinstance(obj, Mapping):
        return {
            key: (REDACTED if SENSITIVE_KEY.search(str(key)) and value not in (None, "") else scrub(value, secret_list))
            for key, value in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return type(obj)(scrub(v, secret_list) for v in obj)
    if isinstance(obj, str):
        return scrub_text(obj, secret_list)
    return obj
