"""Database URLs as people write them: libpq keyword strings, and every credential hidden.

A URL reaches output (messages, logs, reports, the start line of ``cutover serve``) only
through :func:`redact_url`, and a driver's message about it only through :func:`scrub`.
Credentials are the password of ``user:password@``, the value of every query parameter or
keyword whose name says it holds a secret (:func:`is_secret`), and, in a libpq keyword string
(``host=db dbname=app password=...``), the values of the same keywords.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

from cutover.errors import InvalidInput

REDACTED = "***"
"""What stands in for a credential in anything cutover shows or stores."""

_SECRET_WORDS = ("pass", "secret", "token", "credential")

# libpq's connection keywords (PostgreSQL 18): a string of ``keyword=value`` pairs is taken
# for a connection string only when it names these, never for a file name.
LIBPQ_KEYWORDS = frozenset(
    {
        "application_name",
        "channel_binding",
        "client_encoding",
        "connect_timeout",
        "dbname",
        "fallback_application_name",
        "gssdelegation",
        "gssencmode",
        "gsslib",
        "host",
        "hostaddr",
        "keepalives",
        "keepalives_count",
        "keepalives_idle",
        "keepalives_interval",
        "krbsrvname",
        "load_balance_hosts",
        "max_protocol_version",
        "min_protocol_version",
        "oauth_client_id",
        "oauth_client_secret",
        "oauth_issuer",
        "oauth_scope",
        "options",
        "passfile",
        "password",
        "port",
        "replication",
        "require_auth",
        "requirepeer",
        "scram_client_key",
        "scram_server_key",
        "service",
        "ssl_max_protocol_version",
        "ssl_min_protocol_version",
        "sslcert",
        "sslcertmode",
        "sslcompression",
        "sslcrl",
        "sslcrldir",
        "sslkey",
        "sslkeylogfile",
        "sslmode",
        "sslnegotiation",
        "sslpassword",
        "sslrootcert",
        "sslsni",
        "target_session_attrs",
        "tcp_user_timeout",
        "user",
    }
)

# scheme://[user[:password]@]host[:port][/database][?query], split where SQLAlchemy splits it:
# the password runs to the first '@' after it, so an '@' it holds unencoded lands in the host
# (or port, or database), where this grammar keeps it to be noticed.
_URL = re.compile(
    r"\s*(?P<scheme>[\w+.-]+)://"
    r"(?:(?P<user>[^:/]*)(?::(?P<password>[^@]*))?@)?"
    r"(?P<host>[^/?]*)"
    r"(?P<path>/[^?]*)?"
    r"(?P<query>\?.*)?",
    re.DOTALL,
)
_PARAMETER = re.compile(r"[^&;]+")
_KEYWORD = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*")
_LOOKS_LIKE_KEYWORDS = re.compile(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*=")
_NO_SCHEME = re.compile(r"\s*[^/:@\s]+:[^@\s]*@")  # user:password@host/db, "postgresql://" left out


def is_secret(name: str) -> bool:
    """Whether a query parameter or keyword called ``name`` holds a credential: its name says
    pass (password, sslpassword, passfile, passwd), secret, token or credential, or ends in
    key (sslkey, ssl_key, scram_client_key)."""
    plain = name.strip().lower().replace("_", "").replace("-", "")
    return any(word in plain for word in _SECRET_WORDS) or plain.endswith("key")


@dataclass(frozen=True, slots=True)
class _Value:
    """One value in a connection string: where it is written and what it means."""

    start: int
    end: int
    value: str  # unescaped, as the driver receives it
    secret: bool


@dataclass(frozen=True, slots=True)
class _KeywordString:
    """A libpq keyword string, read as far as it could be."""

    keywords: dict[str, str]
    values: list[_Value]
    error: str | None  # why the rest could not be read (never quoting a value)
    rest: int  # where the unread rest starts (the text's length when all was read)


def _read_keywords(text: str) -> _KeywordString:
    """libpq's rules: ``keyword = value`` pairs apart by spaces; a value is single-quoted (with
    ``\\'`` and ``\\\\``) or runs to the next space, with a backslash escaping one character."""
    keywords: dict[str, str] = {}
    values: list[_Value] = []
    position = 0
    after = "the start"
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            return _KeywordString(keywords, values, None, position)
        match = _KEYWORD.match(text, position)
        if match is None:
            return _KeywordString(
                keywords, values, f"it has no keyword=value after {after}", position
            )
        name = match.group(1)
        start = match.end()
        value, position, closed = _read_value(text, start)
        values.append(_Value(start, position, value, is_secret(name)))
        if not closed:
            return _KeywordString(
                keywords, values, f"the quoted value of {name} is not closed", start
            )
        keywords[name] = value
        after = name


def _read_value(text: str, position: int) -> tuple[str, int, bool]:
    """(the value, where it ends, whether a quote it opened was closed)."""
    out = []
    if position < len(text) and text[position] == "'":
        position += 1
        while position < len(text):
            char = text[position]
            if char == "\\" and position + 1 < len(text):
                out.append(text[position + 1])
                position += 2
            elif char == "'":
                return "".join(out), position + 1, True
            else:
                out.append(char)
                position += 1
        return "".join(out), position, False
    while position < len(text) and not text[position].isspace():
        if text[position] == "\\" and position + 1 < len(text):
            position += 1
        out.append(text[position])
        position += 1
    return "".join(out), position, True


def _looks_like_keywords(text: str) -> bool:
    return "://" not in text and _LOOKS_LIKE_KEYWORDS.match(text) is not None


def keywords(text: str, what: str = "the URL") -> dict[str, str] | None:
    """The keywords of a libpq keyword string (``host=db dbname=app user=ana``), or None when
    ``text`` is not written like one. One that is, but cannot be read or names something that
    is not a libpq keyword, is bad input; the message never quotes a value."""
    if not _looks_like_keywords(text):
        return None
    found = _read_keywords(text)
    if found.error is not None:
        raise InvalidInput(
            f"{what} reads like a PostgreSQL keyword string (host=... dbname=...), but"
            f" {found.error}; quote values that hold spaces, like password='a b'"
        )
    unknown = sorted(name for name in found.keywords if name not in LIBPQ_KEYWORDS)
    if unknown:
        raise InvalidInput(
            f"{what} reads like a PostgreSQL keyword string, but {unknown[0]!r} is not a"
            " libpq keyword; fix it, or write sqlite:///PATH for an SQLite file"
        )
    return found.keywords


def as_url(text: str, what: str = "the URL") -> str:
    """What a user wrote for a database, as a URL: a libpq keyword string becomes the
    ``postgresql://`` URL with the same keywords (every one reaches the driver as it is); a
    URL or a path comes back as written. A URL with an unencoded ``@`` in its password (or
    user or database name) is refused: the driver would take part of the password for the
    host, and print it when the host is not found."""
    found = keywords(text, what)
    if found is not None:
        return "postgresql:///?" + urllib.parse.urlencode(found, quote_via=urllib.parse.quote)
    if "://" not in text and _NO_SCHEME.match(text):
        raise InvalidInput(
            f"{what} reads like user:password@host without a scheme; start it with"
            " postgresql:// (or give a file path without ':' and '@')"
        )
    match = _URL.fullmatch(text)
    if match is not None and "@" in (match["host"] or "") + (match["path"] or ""):
        raise InvalidInput(
            f"{what} has an '@' in its password (or user or database name) that is not"
            " percent-encoded; write it as %40, like postgresql://app:p%40ss@host/db"
        )
    return text


def _spans(url: str) -> Iterator[tuple[int, int]]:
    """Where the credentials are written in ``url``: (start, end) of each."""
    if _looks_like_keywords(url):
        found = _read_keywords(url)
        for value in found.values:
            if value.secret:
                yield value.start, value.end
        if found.error is not None and found.rest < len(url):
            yield found.rest, len(url)  # unreadable: any of it may be a password
        return
    bare = _NO_SCHEME.match(url)
    if "://" not in url and bare is not None:
        yield url.index(":") + 1, bare.end() - 1
        return
    match = _URL.fullmatch(url)
    if match is None:
        return
    if match["password"] is not None:
        start = match.start("password")
        # An unencoded '@' in the password: it runs to the last '@' before the host.
        tail = (match["host"] or "") + (match["path"] or "")
        end = match.end("password")
        if "@" in tail:
            end = match.start("host") + tail.rindex("@")
        yield start, end
    elif "@" in (match["host"] or "") + (match["path"] or ""):
        # No password, yet an '@' after the user: whatever sits between may be one.
        tail = (match["host"] or "") + (match["path"] or "")
        yield match.start("host"), match.start("host") + tail.rindex("@")
    if match["query"]:
        offset = match.start("query") + 1
        for parameter in _PARAMETER.finditer(match["query"][1:]):
            name, sep, _value = parameter.group().partition("=")
            if sep and is_secret(urllib.parse.unquote_plus(name)):
                yield offset + parameter.start() + len(name) + 1, offset + parameter.end()


def _merged(spans: Iterator[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def redact_url(url: str) -> str:
    """``url`` (a URL, a libpq keyword string or a path) with every credential written as
    ``***``: the password of ``user:password@``, secret query parameters, secret keywords."""
    out = []
    position = 0
    for start, end in _merged(_spans(url)):
        out.append(url[position:start])
        out.append(REDACTED)
        position = end
    out.append(url[position:])
    return "".join(out)


def holds_redacted(url: str) -> bool:
    """Whether a credential of ``url`` is the stand-in :func:`redact_url` wrote (a URL read
    back from a report), so the real one must be given again."""
    return any(url[start:end].strip("'") == REDACTED for start, end in _spans(url))


_SHORTEST_PART = 3
"""Parts of a credential shorter than this are left in messages: they would hide every
occurrence of a common letter or two, and tell nothing alone."""


def _secrets(url: str) -> tuple[set[str], set[str]]:
    """The credentials of ``url`` in every spelling a driver or library might print (as
    written, decoded, re-encoded), and the parts of them a driver may print alone: the rest
    after each unencoded ``@`` (which a driver takes for the host), the words of a keyword
    string that could not be read."""
    unescaped: dict[tuple[int, int], str] = {}
    if _looks_like_keywords(url):
        unescaped = {(v.start, v.end): v.value for v in _read_keywords(url).values if v.secret}
    whole: set[str] = set()
    parts: set[str] = set()
    for start, end in _spans(url):
        written = url[start:end]
        forms = {written, written.strip().strip("'"), unescaped.get((start, end), written)}
        forms |= {urllib.parse.unquote(form) for form in forms}
        forms |= {urllib.parse.unquote_plus(form) for form in forms}
        forms |= {urllib.parse.quote(form, safe="") for form in forms}
        forms |= {urllib.parse.quote_plus(form, safe="") for form in forms}
        whole |= forms
        for form in forms:
            pieces = form.split("@")
            parts |= {"@".join(pieces[index:]) for index in range(1, len(pieces))}
            parts |= set(form.split())
    whole.discard("")
    return whole, {part for part in parts - whole if len(part) >= _SHORTEST_PART}


def scrub(text: str, *urls: str | None) -> str:
    """``text`` (a driver's message, say) with every credential of ``urls`` replaced by
    ``***``, in any spelling it might be printed in, longest first."""
    secrets: set[str] = set()
    for url in urls:
        if url:
            whole, parts = _secrets(url)
            secrets |= whole | parts
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


__all__ = [
    "LIBPQ_KEYWORDS",
    "REDACTED",
    "as_url",
    "holds_redacted",
    "is_secret",
    "keywords",
    "redact_url",
    "scrub",
]
