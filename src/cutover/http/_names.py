"""Migration names in URLs: each name is one path segment, with ``/`` sent as ``%2F``.

A name may hold ``/`` (``team/codec``), so the API and the dashboard write every name in a URL
percent-encoded (:func:`segment`), and route on the path as the client sent it, decoded segment
by segment (:func:`routable_path`): an encoded slash stays inside its segment instead of
splitting the name, and a name like ``a/..`` is never read as a step up the path.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Annotated, Any
from urllib.parse import quote, unquote

from fastapi import Path as PathParam
from pydantic import AfterValidator, BeforeValidator

from cutover.errors import InvalidInput
from cutover.text import NAME_PATTERN, check_name


def segment(name: str) -> str:
    """``name`` as one URL path segment: ``team/codec`` -> ``team%2Fcodec``."""
    return quote(name, safe="")


def routable_path(scope: MutableMapping[str, Any]) -> str:
    """The request's path for routing: decoded, except that a ``/`` or ``%`` inside a segment
    stays encoded, so that the segment reaches its path parameter whole."""
    raw = scope.get("raw_path")
    path = scope["path"]
    if not raw or b"%" not in raw:
        return path  # nothing was encoded: the server's decoding is already exact
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return path
    return "/".join(
        unquote(part).replace("%", "%25").replace("/", "%2F") for part in text.split("/")
    )


def _decoded(value: Any) -> Any:
    return unquote(value) if isinstance(value, str) else value


def _valid(value: str) -> str:
    try:
        return check_name(value)
    except InvalidInput as error:
        raise ValueError(str(error)) from None


Segment = Annotated[str, BeforeValidator(_decoded)]
"""A path parameter holding a name as :func:`segment` wrote it, decoded."""

Name = Annotated[
    Segment,
    AfterValidator(_valid),
    PathParam(
        description="The migration's name, with `/` written `%2F` (`team%2Fcodec`)",
        examples=["payments"],
        json_schema_extra={"pattern": f"^{NAME_PATTERN}$"},
    ),
]
"""A migration's name in an API path, decoded and held to the one name rule (422 otherwise)."""
