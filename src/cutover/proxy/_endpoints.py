"""The proxy's own answers under ``/-/cutover/``, never forwarded: health and metrics."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily

import cutover
from cutover.model import Arm

if TYPE_CHECKING:
    from cutover.proxy._server import Proxy, Request

_proxy: Proxy | None = None  # the process's proxy, for the metrics collector


def answer(proxy: Proxy, request: Request) -> tuple[int, bytes, bytes]:
    """(status, content type, body) for a request under the reserved prefix."""
    path = request.path
    if path == "/-/cutover/health":
        health = cutover.current().health()
        body = {
            "status": "draining" if proxy.draining else "ok",
            "pid": os.getpid(),
            "store": {
                "reachable": health.reachable,
                "writable": health.writable,
                "states_loaded_at": health.states_loaded_at,
            },
            "migrations": {name: proxy.state_of(name) for name in sorted(proxy.migrations)},
            "upstreams": {arm.value: proxy.upstreams[arm].url for arm in Arm},
            "in_flight": {"clients": len(proxy.clients), "shadows": proxy.shadows},
        }
        status = 503 if proxy.draining else 200
        return status, b"application/json", json.dumps(body).encode()
    if path == "/-/cutover/metrics":
        return 200, CONTENT_TYPE_LATEST.encode(), generate_latest(REGISTRY)
    body = {"title": "Not Found", "status": 404, "detail": f"no proxy endpoint {path}"}
    return 404, b"application/problem+json", json.dumps(body).encode()


class ProxyCollector:
    """The proxy's own counters, beside the migrations' (which cutover's collector exports)."""

    def collect(self):  # type: ignore[no-untyped-def]
        proxy = _proxy
        if proxy is None:
            return
        requests = CounterMetricFamily(
            "cutover_proxy_requests", "Requests the proxy received, its own endpoints included"
        )
        requests.add_metric([], proxy.requests)
        yield requests
        without = CounterMetricFamily(
            "cutover_proxy_requests_without_unit",
            "Requests whose route names a unit source the request did not carry (legacy served)",
        )
        without.add_metric([], proxy.without_unit)
        yield without
        gone = CounterMetricFamily(
            "cutover_proxy_gone", "Requests answered 410 Gone on legacy-only routes"
        )
        gone.add_metric([], proxy.gone)
        yield gone
        clients = GaugeMetricFamily("cutover_proxy_clients", "Open client connections")
        clients.add_metric([], len(proxy.clients))
        yield clients
        shadows = GaugeMetricFamily("cutover_proxy_shadows", "Shadow copies in flight")
        shadows.add_metric([], proxy.shadows)
        yield shadows


_COLLECTOR = ProxyCollector()


def install(proxy: Proxy) -> None:
    """Export ``proxy``'s counters from this process's registry (once)."""
    global _proxy
    if _proxy is None:
        REGISTRY.register(_COLLECTOR)
    _proxy = proxy
