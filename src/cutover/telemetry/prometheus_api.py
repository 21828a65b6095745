"""A client of Prometheus' HTTP query API (instant and range queries), for health checks, SLO
budgets and the windows rebuilt from Prometheus: every caller reads Prometheus through it."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cutover.errors import CutoverError
from cutover.urls import redact_url

__all__ = ["PrometheusError", "Sample", "Series", "query", "query_range", "render"]


class PrometheusError(CutoverError):
    """The query could not be answered; the message is one sentence saying what and how to fix."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of an instant query: a series of an instant vector, or the scalar."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class Series:
    """One series of a range query: its labels and its (time, value) points, oldest first."""

    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]


_WINDOW = re.compile(r"\$(?:\{window\}|window\b)")

# Largest first, so that a window is written in the unit a person would pick (3600 -> "1h").
_DURATION_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))

# What to do about each errorType of Prometheus' API error body.
_ERROR_FIXES = {
    "bad_data": "correct the PromQL",
    "execution": "correct the query or the series it reads",
    "timeout": "simplify the query or raise the server's --query.timeout",
    "canceled": "try again",
    "unavailable": "try again once the server is ready",
    "internal": "check the Prometheus server's log",
    "not_found": "check the URL's path prefix",
    "not_acceptable": "check the Prometheus server's log",
}


def render(query: str, window_seconds: float) -> str:
    """Substitute `$window` / `${window}` in the query by the window as a Prometheus duration
    (300 -> "5m", 90 -> "90s", 3600 -> "1h", 86400 -> "1d")."""
    return _WINDOW.sub(lambda _: _prometheus_duration(window_seconds), query)


def _prometheus_duration(seconds: float) -> str:
    if not (math.isfinite(seconds) and seconds > 0):
        raise PrometheusError(
            f"the window {seconds!r} is not a positive duration; give the check a window like 5m"
        )
    # Prometheus durations are whole numbers of one unit (or a sum of such parts), so a
    # fractional number of seconds has to be spelled in milliseconds.
    millis = round(seconds * 1000)
    if millis == 0:
        raise PrometheusError(
            f"the window {seconds!r}s is shorter than Prometheus' 1ms resolution;"
            " give the check a window of at least 1s"
        )
    if millis % 1000:
        return f"{millis}ms"
    whole = millis // 1000
    for unit, size in _DURATION_UNITS:
        if whole % size == 0:
            return f"{whole // size}{unit}"
    raise AssertionError("unreachable: every whole number of seconds divides by 1")


def query(
    url: str,
    promql: str,
    *,
    timeout: float = 5.0,
    headers: Mapping[str, str] | None = None,
    at: float | None = None,
) -> list[Sample]:
    """Instant query GET {url}/api/v1/query?query=...[&time=at]; returns the samples of an
    instant vector or scalar.

    ``url`` is the server's base URL, with any path prefix it is served under
    (``http://host:9090/prom``); ``timeout`` bounds, in seconds, the connection and each wait
    for data; ``headers`` are sent as they are (for instance ``Authorization``); ``at`` is the
    evaluation time as a Unix timestamp, the server's now when None.
    """
    params = {"query": promql}
    if at is not None:
        params["time"] = repr(float(at))
    shown = redact_url(url)
    body = _request(url, "/api/v1/query", params, timeout, headers)
    return _samples(shown, promql, body.get("data"))


def query_range(
    url: str,
    promql: str,
    *,
    start: float,
    end: float,
    step: float,
    timeout: float = 5.0,
    headers: Mapping[str, str] | None = None,
) -> list[Series]:
    """Range query GET {url}/api/v1/query_range: every series' values from ``start`` to ``end``
    (Unix timestamps) every ``step`` seconds, as the server evaluates them."""
    params = {
        "query": promql,
        "start": repr(float(start)),
        "end": repr(float(end)),
        "step": repr(float(step)),
    }
    shown = redact_url(url)
    data = _request(url, "/api/v1/query_range", params, timeout, headers).get("data")
    if not isinstance(data, dict) or data.get("resultType") != "matrix":
        raise PrometheusError(_malformed(shown, "a range query's answer is not a matrix"))
    out = []
    for series in data.get("result") or ():
        if not isinstance(series, dict) or not isinstance(series.get("values"), list):
            raise PrometheusError(_malformed(shown, "a series of the matrix has no values"))
        labels = {str(k): str(v) for k, v in (series.get("metric") or {}).items()}
        points = tuple((float(pair[0]), _value(shown, pair)) for pair in series["values"])
        out.append(Series(labels=labels, points=points))
    return out


def _request(
    url: str,
    path: str,
    params: dict[str, str],
    timeout: float,
    headers: Mapping[str, str] | None,
) -> dict[str, Any]:
    """GET one of the query APIs; the answer's body, or PrometheusError saying what to fix."""
    try:
        import httpx
    except ImportError:
        raise PrometheusError(
            "querying Prometheus needs httpx, which is not installed;"
            " run pip install 'cutover[rollout]'"
        ) from None

    shown = redact_url(url)
    endpoint = url.rstrip("/") + path
    promql = params["query"]
    try:
        response = httpx.get(
            endpoint,
            params=params,
            headers=dict(headers or {}),
            timeout=timeout,
            # A reverse proxy in front of Prometheus may redirect (http -> https, prefix
            # normalisation); httpx drops Authorization on a redirect to another host.
            follow_redirects=True,
        )
    except httpx.TimeoutException:
        raise PrometheusError(
            f"Prometheus at {shown} did not answer within {timeout:g}s;"
            " check that the server is up and not overloaded, or raise the check's timeout"
        ) from None
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as error:
        raise PrometheusError(
            f"the Prometheus URL {shown!r} is not usable ({error});"
            " write it like http://prometheus:9090 or http://host/prefix"
        ) from None
    except httpx.ConnectError as error:
        raise PrometheusError(
            f"cannot connect to Prometheus at {shown} ({_reason(error)});"
            " check that the server is running and the URL's host and port are right"
        ) from None
    except UnicodeEncodeError:
        raise PrometheusError(
            f"a header for Prometheus at {shown} is not ASCII, which HTTP cannot carry;"
            " encode its value (for instance as base64) or remove it"
        ) from None
    except httpx.HTTPError as error:
        raise PrometheusError(
            f"the request to Prometheus at {shown} failed ({_reason(error)});"
            " check the URL, the check's headers and the network between here and the server"
        ) from None

    body = _json_body(response.content)
    if not isinstance(body, dict) or body.get("status") not in ("success", "error"):
        raise PrometheusError(_not_prometheus(shown, response.status_code, response.content))
    if body["status"] == "error" or not response.is_success:
        raise PrometheusError(_api_error(shown, promql, response.status_code, body))
    return body


def _reason(error: Exception) -> str:
    text = str(error).strip()
    # httpx puts the OS error in the message ("[Errno 111] Connection refused"); a bare
    # exception class name is all there is otherwise.
    return text.splitlines()[0] if text else type(error).__name__


def _json_body(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return None


def _not_prometheus(shown: str, status: int, content: bytes) -> str:
    snippet = " ".join(content.decode("utf-8", "replace").split())[:120] or "an empty body"
    if status in (401, 403):
        fix = "pass the credentials the server expects in the check's headers"
    elif status == 404:
        fix = "check that the URL points at Prometheus, with its path prefix if it has one"
    elif status >= 500:
        fix = "check that Prometheus, and any proxy in front of it, is up"
    else:
        fix = "check that the URL points at Prometheus and not at another service"
    return (
        f"Prometheus at {shown} answered HTTP {status} with a body that is not a Prometheus API"
        f" answer ({snippet!r}); {fix}"
    )


def _api_error(shown: str, promql: str, status: int, body: Mapping[str, Any]) -> str:
    kind = str(body.get("errorType") or "error")
    text = " ".join(str(body.get("error") or "no error text").split())
    fix = _ERROR_FIXES.get(kind, "check the Prometheus server's log")
    return (
        f"Prometheus at {shown} refused the query {promql!r} with HTTP {status}"
        f" ({kind}: {text}); {fix}"
    )


def _samples(shown: str, promql: str, data: Any) -> list[Sample]:
    if not isinstance(data, dict):
        raise PrometheusError(_malformed(shown, "it has no data object"))
    kind = data.get("resultType")
    result = data.get("result")
    if kind == "matrix":
        raise PrometheusError(
            "the query returns a range vector; wrap it in an aggregation such as"
            f" max_over_time(...), as in max_over_time({promql})"
        )
    if kind == "string":
        raise PrometheusError(
            f"the query {promql!r} returns a string, not a number;"
            " write one whose result is a number, such as max(metric)"
        )
    if kind == "scalar":
        return [Sample(labels={}, value=_value(shown, result))]
    if kind == "vector" and isinstance(result, list):
        return [_series(shown, promql, series) for series in result]
    raise PrometheusError(_malformed(shown, f"its resultType is {kind!r}"))


def _series(shown: str, promql: str, series: Any) -> Sample:
    if not isinstance(series, dict):
        raise PrometheusError(_malformed(shown, "a series of the vector is not an object"))
    metric = series.get("metric") or {}
    labels = {str(key): str(value) for key, value in metric.items()}
    if "value" not in series:
        if "histogram" in series:
            raise PrometheusError(
                f"the query {promql!r} returns a native histogram for {labels};"
                " reduce it to a number with histogram_quantile(...) or histogram_count(...)"
            )
        raise PrometheusError(_malformed(shown, f"the series {labels} has no value"))
    return Sample(labels=labels, value=_value(shown, series["value"]))


def _value(shown: str, pair: Any) -> float:
    # Prometheus sends [timestamp, "value"] with the value as a string so that NaN and
    # +Inf/-Inf survive JSON; Python's float() reads all of its spellings.
    if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str)):
        raise PrometheusError(_malformed(shown, f'a value is {pair!r}, not [time, "number"]'))
    try:
        return float(pair[1])
    except ValueError:
        raise PrometheusError(_malformed(shown, f"the value {pair[1]!r} is not a number")) from None


def _malformed(shown: str, what: str) -> str:
    return (
        f"Prometheus at {shown} sent a query result that cannot be read ({what});"
        " check that the URL points at a Prometheus-compatible query API"
    )
