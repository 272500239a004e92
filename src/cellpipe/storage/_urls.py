"""Store URLs as they may be shown: every secret in them replaced by ``***``.

Owns: `redact_url`, used wherever a metadata or artifact store URL reaches a message, a
``repr`` or the CLI. A password can sit in the user info (``user:secret@host``) or in the query
(``?password=secret``, libpq's ``sslpassword``, a ``token``); both are masked.

Must not depend on: anything in cellpipe.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

# Query parameters that carry secrets (libpq, SQLAlchemy drivers, object stores).
_SECRET_KEYS = frozenset(
    {"password", "pass", "passwd", "pwd", "sslpassword", "secret", "token", "access_token",
     "secret_access_key", "aws_secret_access_key", "session_token", "api_key", "apikey", "key"}
)  # fmt: skip


def redact_url(url: str) -> str:
    """Return ``url`` with its password and secret query values replaced by ``***``.

    Args:
        url: any URL (``postgresql+psycopg://u:p@h/db?sslpassword=x``); text that does not
            parse as one is returned as a placeholder rather than risk showing a secret.
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, host = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(key.lower() in _SECRET_KEYS for key, _ in pairs):
                query = urlencode(
                    [(k, "***" if k.lower() in _SECRET_KEYS else v) for k, v in pairs], safe="*"
                )
    except ValueError:
        return "(unparseable URL)"
    if netloc == parts.netloc and query == parts.query:
        return url  # nothing secret: shown exactly as given
    text = f"{parts.scheme}://{netloc}{parts.path}"
    text += f"?{query}" if query else ""
    return text + (f"#{parts.fragment}" if parts.fragment else "")
