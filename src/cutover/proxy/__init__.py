"""``cutover proxy``: shadow and canary for whole HTTP services, routed by a migration's state.

A reverse proxy in front of a legacy and a new service. Each request is routed exactly as an
in-process call of the route's migration would be (mode, sticky percent, pins, sample,
fallback, kill switch), its answers are counted and compared like any migration's, so
``cutover set``, plans and the controller, checks, the admin API and the dashboard work for an
HTTP service unchanged. See docs/proxy.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cutover.errors import InvalidInput, StoreError
from cutover.proxy._config import Routes, Upstream, build_routes, load_routes
from cutover.proxy._server import Limits, Proxy

log = logging.getLogger("cutover.proxy")

__all__ = ["Limits", "ProxyOptions", "run"]


@dataclass(frozen=True, slots=True)
class ProxyOptions:
    """Everything ``cutover proxy`` was told."""

    name: str
    host: str
    port: int
    legacy: Upstream
    new: Upstream
    secondary: Upstream | None = None  # a second legacy instance, to learn noise from
    store: str | None = None
    routes_file: Path | None = None
    unit: str | None = None
    workers: int = 1
    drain: float = 30.0  # seconds SIGTERM waits for requests in flight
    flush_interval: float = 5.0  # seconds between telemetry flushes to the store
    record: Path | None = None  # where recorded exchanges go, as JSON Lines
    record_sample: float = 0.01  # the share of requests recorded
    limits: Limits = field(default_factory=Limits)

    def routes(self) -> Routes:
        if self.routes_file is None:
            return build_routes(self.name, self.unit)
        return load_routes(self.routes_file, self.name, self.unit)


def listening_socket(host: str, port: int) -> socket.socket:
    """The socket every worker accepts on, bound once here; one sentence when it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise InvalidInput(
            f"cannot listen on {host}:{port} ({error.strerror}); pick a free --listen address"
        ) from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def run(options: ProxyOptions) -> None:
    """Serve until SIGTERM or SIGINT: in this process, or in ``workers`` forked ones."""
    options.routes()  # a mistake in the routes file is one sentence, before anything starts
    sock = listening_socket(options.host, options.port)
    if options.workers == 1:
        _serve(options, sock)
        return
    _supervise(options, sock)


def _serve(options: ProxyOptions, sock: socket.socket) -> None:
    import uvloop

    uvloop.run(_main(options, sock))


async def _main(options: ProxyOptions, sock: socket.socket) -> None:
    import cutover
    from cutover.proxy._endpoints import install
    from cutover.proxy._server import Client

    kwargs = {} if options.store is None else {"store": options.store}
    runtime = cutover.configure(
        instance=f"proxy-{options.name}"[:90], flush_interval=options.flush_interval, **kwargs
    )
    proxy = Proxy(options.legacy, options.new, options.routes(), options.limits, options.secondary)
    install(proxy)
    if options.record is not None:
        from cutover.proxy._record import Recorder

        proxy.recorder = Recorder(options.record, options.name, options.record_sample)
    await asyncio.to_thread(_sync_noise, proxy, runtime)  # the declared noise, before serving
    syncing = asyncio.get_running_loop().create_task(
        _keep_noise(proxy, runtime, options.flush_interval)
    )
    # What start-up made (modules, routes, the store's engine) lives as long as the process:
    # out of the collector's sight, a collection walks only what requests allocate.
    gc.collect()
    gc.freeze()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(proxy), sock=sock)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload, options, proxy)
    log.info(
        "cutover proxy %s on %s:%d: legacy %s, new %s (pid %d)",
        options.name,
        options.host,
        options.port,
        options.legacy.url,
        options.new.url,
        os.getpid(),
    )
    await stop.wait()
    await _drain(proxy, server, options.drain)
    syncing.cancel()
    await asyncio.to_thread(_sync_noise, proxy, runtime)
    if proxy.recorder is not None:
        await asyncio.to_thread(proxy.recorder.close)
    await asyncio.to_thread(cutover.flush)


def _sync_noise(proxy: Proxy, runtime: Any) -> None:
    """Read the declared noise of each migration; write what this process learned and its
    counts per route."""
    store = runtime.store
    with proxy.syncing:
        try:
            windows, taken = proxy.routes_tally.take()
            for name, rows in windows.items():
                store.write_route_windows(name, runtime.instance, rows)
            proxy.routes_tally.settle(taken)
            for name in list(proxy.migrations):
                proxy.rules[name] = tuple(rule.prefix for rule in store.noise_rules(name))
                model = proxy.noise.get(name)
                if model is not None:
                    store.write_noise(name, runtime.instance, model.counts(), runtime.clock())
        except StoreError as error:  # the last known rules stay; learned counts come later
            log.warning("cutover proxy cannot sync its noise with the store: %s", error)


async def _keep_noise(proxy: Proxy, runtime: Any, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        await asyncio.to_thread(_sync_noise, proxy, runtime)


def _reload(options: ProxyOptions, proxy: Proxy) -> None:
    """SIGHUP: read the routes file again; a mistake keeps the routes in use, and says why."""
    try:
        proxy.use(options.routes())
    except InvalidInput as error:
        log.error("cutover proxy kept its routes: %s", error)
        return
    log.info("cutover proxy reloaded %s", options.routes_file or "its routes")


async def _drain(proxy: Proxy, server: asyncio.AbstractServer, seconds: float) -> None:
    """Stop accepting, let requests in flight finish (keep-alive connections close after their
    answer), and close what is left after ``seconds``."""
    proxy.draining = True
    server.close()
    for client in list(proxy.clients):
        if not client.exchanges:
            client.close()
    deadline = time.monotonic() + seconds
    while proxy.clients and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for client in list(proxy.clients):
        client.close()
    for pool in proxy.pools.values():
        pool.close()


def _supervise(options: ProxyOptions, sock: socket.socket) -> None:
    """Fork ``workers`` processes that share the socket; pass SIGTERM, SIGINT and SIGHUP on,
    and start a worker again if one dies while not stopping."""
    children: dict[int, int] = {}  # pid -> slot
    stopping = False

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the worker
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(signum, signal.SIG_DFL)
            code = 0
            try:
                _serve(options, sock)
            except BaseException:
                log.exception("cutover proxy worker failed")
                code = 1
            finally:
                sys.stdout.flush()
                os._exit(code)
        children[pid] = slot

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM if signum == signal.SIGINT else signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    for slot in range(options.workers):
        spawn(slot)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        slot = children.pop(pid, None)
        if slot is not None and not stopping:
            log.warning("cutover proxy worker %d ended (status %d); starting another", pid, status)
            time.sleep(0.5)
            spawn(slot)
    sock.close()
