"""The Prometheus query client against a small local HTTP server that answers canned bodies."""

from __future__ import annotations

import json
import math
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cutover.telemetry.prometheus_api import PrometheusError, Sample, query, render


@dataclass
class Canned:
    """What the server answers next, and what it was last asked."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    prefix: str = ""
    delay: float = 0.0
    released: threading.Event = field(default_factory=threading.Event)
    requests: list[tuple[str, dict[str, list[str]], dict[str, str]]] = field(default_factory=list)

    def json(self, payload: Any, status: int = 200) -> None:
        self.status, self.body, self.content_type = (
            status,
            json.dumps(payload).encode(),
            ("application/json"),
        )

    def data(self, result_type: str, result: Any) -> None:
        self.json({"status": "success", "data": {"resultType": result_type, "result": result}})


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        canned = self.server.canned
        parts = urllib.parse.urlsplit(self.path)
        canned.requests.append(
            (parts.path, urllib.parse.parse_qs(parts.query), dict(self.headers.items()))
        )
        if canned.delay:
            canned.released.wait(canned.delay)
        if parts.path != canned.prefix + "/api/v1/query":
            status, body, content_type = 404, b"404 page not found\n", "text/plain"
        else:
            status, body, content_type = canned.status, canned.body, canned.content_type
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up waiting, which is what a timeout test wants

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    canned: Canned


@pytest.fixture(scope="module")
def _httpd() -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.canned = Canned()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.canned.released.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def server(_httpd: _Server) -> Iterator[tuple[str, Canned]]:
    """A base URL and the canned answer its server gives, fresh for each test."""
    _httpd.canned = canned = Canned()
    try:
        yield f"http://127.0.0.1:{_httpd.server_port}", canned
    finally:
        canned.released.set()


def test_vector(server: tuple[str, Canned]) -> None:
    url, canned = server
    canned.data(
        "vector",
        [
            {"metric": {"job": "app", "instance": "a:1"}, "value": [1700000000.5, "1.5e9"]},
            {"metric": {"job": "app", "instance": "b:1"}, "value": [1700000000.5, "42"]},
        ],
    )
    samples = query(url, 'process_resident_memory_bytes{job="app"}')
    assert samples == [
        Sample(labels={"job": "app", "instance": "a:1"}, value=1.5e9),
        Sample(labels={"job": "app", "instance": "b:1"}, value=42.0),
    ]
    path, params, _ = canned.requests[-1]
    assert path == "/api/v1/query"
    assert params == {"query": ['process_resident_memory_bytes{job="app"}']}


def test_scalar(server: tuple[str, Canned]) -> None:
    url, canned = server
    canned.data("scalar", [1700000000, "0.25"])
    assert query(url, "scalar(up)") == [Sample(labels={}, value=0.25)]


def test_empty_vector(server: tuple[str, Canned]) -> None:
    url, canned = server
    canned.data("vector", [])
    assert query(url, "max(absent_metric)") == []


def test_nan_and_infinities(server: tuple[str, Canned]) -> None:
    url, canned = server
    canned.data(
        "vector",
        [
            {"metric": {"i": "0"}, "value": [1, "NaN"]},
            {"metric": {"i": "1"}, "value": [1, "+Inf"]},
            {"metric": {"i": "2"}, "value": [1, "-Inf"]},
        ],
    )
    values = [sample.value for sample in query(url, "x")]
    assert math.isnan(values[0])
    assert values[1:] == [math.inf, -math.inf]


def test_time_and_headers_are_sent(server: tuple[str, Canned]) -> None:
    url, canned = server
    canned.data("vector", [])
    query(url, "up", at=1700000000.25, headers={"Authorization": "Bearer t0ken"})
    _, params, headers = canned.requests[-1]
    assert params == {"query": ["up"], "time": ["1700000000.25"]}
    assert headers["Authorization"] == "Bearer t0ken"


@pytest.mark.parametrize(("prefix", "base"), [("", "/"), ("/prom", "/prom"), ("/prom", "/prom/")])
def test_trailing_slash_and_path_prefix(server: tuple[str, Canned], prefix: str, base: str) -> None:
    url, canned = server
    canned.prefix = prefix
    canned.data("scalar", [1, "7"])
    assert query(url + base, "vector(7)") == [Sample(labels={}, value=7.0)]
    assert canned.requests[-1][0] == prefix + "/api/v1/query"


def test_missing_path_prefix_names_it(server: tuple[str, Canned]) -> None:
    url, canned = server
    canned.prefix = "/prom"
    with pytest.raises(PrometheusError, match=r"HTTP 404 .*path prefix"):
        query(url, "up")


def test_error_status_with_json_body(server: tuple[str, Canned]) -> None:
    url, canned = server
    canned.json(
        {
            "status": "error",
            "errorType": "bad_data",
            "error": "1:5: parse error: unclosed left parenthesis",
        },
        status=400,
    )
    with pytest.raises(PrometheusError) as caught:
        query(url, "max(")
    message = str(caught.value)
    assert "HTTP 400" in message
    assert "bad_data: 1:5: parse error: unclosed left parenthesis" in message
    assert "'max('" in message
    assert message.endswith("correct the PromQL")


def test_body_that_is_not_json(server: tuple[str, Canned]) -> None:
    url, canned = server
    canned.status, canned.body, canned.content_type = 502, b"<html>Bad Gateway</html>", "text/html"
    with pytest.raises(PrometheusError, match=r"HTTP 502 .*not a Prometheus API.*Bad Gateway"):
        query(url, "up")


def test_success_status_with_json_that_is_not_prometheus(server: tuple[str, Canned]) -> None:
    url, canned = server
    canned.json({"hello": "world"})
    with pytest.raises(PrometheusError, match=r"HTTP 200 .*not a Prometheus API"):
        query(url, "up")


def test_matrix_is_refused_with_the_fix(server: tuple[str, Canned]) -> None:
    url, canned = server
    canned.data("matrix", [{"metric": {}, "values": [[1, "1"], [2, "2"]]}])
    with pytest.raises(PrometheusError) as caught:
        query(url, "up[5m]")
    assert str(caught.value) == (
        "the query returns a range vector; wrap it in an aggregation such as"
        " max_over_time(...), as in max_over_time(up[5m])"
    )


def test_string_is_refused(server: tuple[str, Canned]) -> None:
    url, canned = server
    canned.data("string", [1, "hello"])
    with pytest.raises(PrometheusError, match="returns a string, not a number"):
        query(url, '"hello"')


def test_unreadable_value(server: tuple[str, Canned]) -> None:
    url, canned = server
    canned.data("vector", [{"metric": {}, "value": [1, "lots"]}])
    with pytest.raises(PrometheusError, match="'lots' is not a number"):
        query(url, "up")


def test_timeout_names_the_url(server: tuple[str, Canned]) -> None:
    url, canned = server
    canned.data("vector", [])
    canned.delay = 5.0
    with pytest.raises(PrometheusError, match=rf"Prometheus at {url} did not answer within 0.2s"):
        query(url, "up", timeout=0.2)


def test_connection_refused_names_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(
        PrometheusError, match=rf"cannot connect to Prometheus at {url} \("
    ) as caught:
        query(url, "up", timeout=2)
    assert str(caught.value).count(";") == 1


def test_password_in_url_is_not_shown() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(PrometheusError) as caught:
        query(f"http://user:s3cret@127.0.0.1:{port}", "up", timeout=2)
    assert "s3cret" not in str(caught.value)
    assert f"user:***@127.0.0.1:{port}" in str(caught.value)


def test_a_token_in_the_url_query_is_not_shown() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(PrometheusError) as caught:
        query(f"http://127.0.0.1:{port}/?access_token=s3cret", "up", timeout=2)
    assert "s3cret" not in str(caught.value)
    assert f"127.0.0.1:{port}/?access_token=*** (" in str(caught.value)


def test_header_that_http_cannot_carry(server: tuple[str, Canned]) -> None:
    url, _ = server
    with pytest.raises(PrometheusError, match=r"header .* is not ASCII"):
        query(url, "up", headers={"Authorization": "Bearer é"})


def test_url_without_scheme() -> None:
    with pytest.raises(PrometheusError, match="write it like http://"):
        query("prometheus:9090", "up")


def test_missing_httpx_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "httpx", None)
    with pytest.raises(PrometheusError, match=r"pip install 'cutover\[rollout\]'"):
        query("http://127.0.0.1:9", "up")


@pytest.mark.parametrize(
    ("seconds", "duration"),
    [
        (300, "5m"),
        (90, "90s"),
        (3600, "1h"),
        (86400, "1d"),
        (172800, "2d"),
        (5400, "90m"),
        (1, "1s"),
        (300.0, "5m"),
        (1.5, "1500ms"),
        (0.25, "250ms"),
    ],
)
def test_render_window(seconds: float, duration: str) -> None:
    assert render("max_over_time(m[$window])", seconds) == f"max_over_time(m[{duration}])"
    assert render("rate(m[${window}])", seconds) == f"rate(m[{duration}])"


def test_render_replaces_every_occurrence_and_nothing_else() -> None:
    promql = "rate(a[$window]) / rate(b[${window}]) > $windows + $$window_x"
    assert render(promql, 600) == "rate(a[10m]) / rate(b[10m]) > $windows + $$window_x"
    assert render('max(process_resident_memory_bytes{job="app"})', 300) == (
        'max(process_resident_memory_bytes{job="app"})'
    )


@pytest.mark.parametrize("seconds", [0, -5, math.nan, math.inf, 0.0001])
def test_render_refuses_windows_prometheus_cannot_take(seconds: float) -> None:
    with pytest.raises(PrometheusError, match="window"):
        render("m[$window]", seconds)
