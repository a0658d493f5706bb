"""Scrub secrets from anything otelgate writes (reports, stack logs and diagnostics): known secrets verbatim, plus
anything that looks like a token.

The sink never stores a token, but payloads can carry one by accident (a logged ``Authorization`` header in a Kong
access log, a collector log line), so every artifact passes through here before it is written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

REDACTED = "<redacted>"

# A Dynatrace API token: dt0c01.<public part>.<secret part>
_DYNATRACE_TOKEN = re.compile(r"\bdt0[a-z]\d{2}\.[A-Za-z0-9]{8,}\.[A-Za-z0-9]{16,}")
# A credential after "Api-Token" / "Bearer" / "Basic": 8+ token characters, at least one of them a digit or
# punctuation, so prose such as "wrong Api-Token in the exporter" stays readable.
_CREDENTIAL = r"(?=[A-Za-z0-9._~+/=\-]*[0-9._~+/=\-])[A-Za-z0-9._~+/=\-]{8,}"
_SCHEME_VALUE = re.compile(rf"(?i)\b(Api-Token|Bearer|Basic)(\s+){_CREDENTIAL}")
# key: value / key=value / "key": "value" for header- or setting-like keys
_KEY_VALUE = re.compile(
    r"""(?i)\b(authorization|api[-_]?token|x-api-key|dt_api_token)(["']?\s*[:=]\s*["']?)"""
    r"""(?!<redacted>|Api-Token|Bearer|Basic)([^\s"',}\]]+)""")
_SECRET_KEY = re.compile(r"(?i)(authorization|api[-_]?token|x-api-key|password|secret)")


def scrub_text(text: str, secrets: Iterable[str] = (), patterns: bool = True) -> str:
    """``text`` with the given secrets and (``patterns``) anything token-like replaced by ``<redacted>``."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    if not patterns:
        return text
    text = _DYNATRACE_TOKEN.sub(REDACTED, text)
    text = _SCHEME_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return _KEY_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with each known secret (a stack's generated token) replaced, nothing else touched: for logs and
    configs a stack writes, where token-shaped ids must stay readable."""
    return scrub_text(text, [secret for secret in secrets if secret], patterns=False)


def scrub_data(value: Any, secrets: Iterable[str] = (), patterns: bool = True) -> Any:
    """A deep copy of a JSON-like value with secrets scrubbed from strings and, with ``patterns``, token-like
    strings and the values of secret-named keys (``authorization``, ``http.request.header.authorization``,
    ``api_token`` ...) replaced too. ``patterns=False`` (known secrets only) keeps ids and names exact."""
    known = tuple(secrets)
    if isinstance(value, str):
        return scrub_text(value, known, patterns)
    if isinstance(value, Mapping):
        return {key: REDACTED if patterns and _is_secret_entry(key, item) else scrub_data(item, known, patterns)
                for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_data(item, known, patterns) for item in value]
    return value


def _is_secret_entry(key: Any, item: Any) -> bool:
    return (isinstance(key, str) and bool(_SECRET_KEY.search(key))
            and isinstance(item, str | list | tuple) and bool(item))


def scrub_files(folder: Path, secrets: Iterable[str]) -> list[Path]:
    """Rewrite every text file under ``folder`` that contains one of ``secrets``; return the rewritten files.

    The last line of defence: files other components wrote (process logs, diagnostics) are checked too.
    """
    known = [s for s in secrets if s]
    if not known:
        return []
    encoded = [s.encode() for s in known]
    rewritten: list[Path] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if not any(secret in data for secret in encoded):
            continue
        for secret in encoded:
            data = data.replace(secret, REDACTED.encode())
        path.write_bytes(data)
        rewritten.append(path)
    return rewritten
