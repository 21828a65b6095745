"""The API v1 -> v2 runbook, end to end through `cutover proxy`, on a shared simulated clock.

A FastAPI v1 and a TypeScript v2 run as processes behind `cutover proxy`, with a temporary
SQLite store. Users' traffic flows through the proxy all along. Shadow mode finds v2's two
planted faults (a mobile JWT secret that differs from v1's, so v2 answers 401 where v1 answers
200, and halves rounded up where v1 rounds them to even); the fixed v2 is deployed, and the
controller walks `examples/plans/api-v2.yaml` (a week of shadow, canary 10/50/100%, a week of
v2 alone) while the traffic flows, one simulated day at a time. Then v1's export endpoint is
retired (410 Gone), and the kill switch sends everything back to v1. Run it with
`make demo-api` (or `python -m examples.api.demo`); it needs Node.js and npm.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import httpx

from cutover.clock import FileClock
from cutover.control.controller import Controller
from cutover.model import Arm, Decision
from cutover.store import Store, open_store
from examples.codec.demo import banner, cli_command

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
V2 = HERE / "v2"
PLAN = ROOT / "examples" / "plans" / "api-v2.yaml"
ROUTES = HERE / "routes.yaml"
DAY = 86400
REQUESTS_PER_DAY = int(os.environ.get("DEMO_REQUESTS", "560"))
SECRETS = {"web": "web-secret-7f3a", "mobile": "mobile-secret-91c2"}
WRONG_MOBILE = "mobile-secret-staging"  # what v2's first .env held
USERS = [f"{'mobile' if n % 4 == 0 else 'web'}-user-{n:02}" for n in range(1, 41)]


def token(user: str) -> str:
    """An HS256 JWT for ``user``, signed with its client's secret (key id web or mobile)."""

    def encode(value: bytes) -> str:
        return base64.urlsafe_b64encode(value).rstrip(b"=").decode()

    kid = user.split("-", maxsplit=1)[0]
    head = encode(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = encode(json.dumps({"sub": user}).encode())
    signature = hmac.new(SECRETS[kid].encode(), f"{head}.{body}".encode(), hashlib.sha256)
    return f"{head}.{body}.{encode(signature.digest())}"


def secrets_spec(mobile: str = SECRETS["mobile"]) -> str:
    return f"web:{SECRETS['web']},mobile:{mobile}"


def free_port() -> int:

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_v2() -> None:
    """`npm ci` and `npx tsc` when the dependencies or the compiled server are missing or stale."""
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        raise SystemExit("make demo-api needs Node.js and npm (apt-get install nodejs npm)")
    if not (V2 / "node_modules" / ".package-lock.json").exists():
        print("$ npm ci   # in examples/api/v2")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=V2, check=True)
    source, built = V2 / "src" / "server.ts", V2 / "build" / "server.js"
    if not built.exists() or built.stat().st_mtime < source.stat().st_mtime:
        print("$ npx tsc  # in examples/api/v2")
        subprocess.run([npm, "exec", "--", "tsc"], cwd=V2, check=True)


class Demo:
    """The processes, the shared clock, the store, and the users' traffic."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.store_url = f"sqlite:///{folder / 'cutover.db'}"
        self.clock = FileClock(folder / "clock")
        self.clock.set((int(time.time()) // DAY) * DAY)  # midnight today, then a day a step
        self.began = self.clock()
        self.env = {
            **os.environ,
            "CUTOVER_STORE": self.store_url,
            "CUTOVER_CLOCK": f"file:{self.clock.path}",
            "CUTOVER_ACTOR": "ana@cohortlens",
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.ports = {"v1": free_port(), "v2": free_port(), "proxy": free_port()}
        self.proxy = f"http://127.0.0.1:{self.ports['proxy']}"
        self.store: Store = open_store(self.store_url)
        self.controller = Controller(self.store, clock=self.clock)
        self.seen = 0  # decisions already shown
        self.command = cli_command()

    # -- processes -----------------------------------------------------------------------

    def start(self, name: str, argv: list[str], ready: str, **env: str) -> None:
        log = (self.folder / f"{name}.log").open("ab")
        process = subprocess.Popen(
            argv, cwd=ROOT, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT
        )
        self.processes[name] = process
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise SystemExit(f"{name} exited: {(self.folder / f'{name}.log').read_text()}")
            try:
                httpx.get(ready, timeout=1)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name} did not answer {ready} within 30 s") from None
                time.sleep(0.05)

    def stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)
        self.controller.close()
        self.store.close()

    def start_v1(self) -> None:
        port = self.ports["v1"]
        self.start(
            "v1",
            [sys.executable, "-m", "examples.api.v1"],
            f"http://127.0.0.1:{port}/api/v1/health",
            PORT=str(port),
            JWT_SECRETS=secrets_spec(),
        )

    def start_v2(self, release: str, mobile_secret: str) -> None:
        port = self.ports["v2"]
        self.start(
            "v2",
            ["node", str(V2 / "build" / "server.js")],
            f"http://127.0.0.1:{port}/api/v1/health",
            PORT=str(port),
            RELEASE=release,
            JWT_SECRETS=secrets_spec(mobile_secret),
        )

    def start_proxy(self, **env: str) -> None:
        argv = [
            "proxy", "api-v2", "--listen", f"127.0.0.1:{self.ports['proxy']}",
            "--legacy", f"http://127.0.0.1:{self.ports['v1']}",
            "--new", f"http://127.0.0.1:{self.ports['v2']}",
            "--routes", str(ROUTES.relative_to(ROOT)), "--flush-interval", "100ms",
        ]  # fmt: skip
        shown = " ".join(f"{k}={v}" for k, v in env.items())
        print(f"$ {shown + ' ' if shown else ''}{self.command} {' '.join(argv)} &")
        self.start(
            "proxy",
            [sys.executable, "-m", "cutover", *argv],
            f"{self.proxy}/-/cutover/health",
            **env,
        )

    # -- the command line ----------------------------------------------------------------

    def cli(self, *args: str, show: Callable[[str], str] = lambda out: out) -> str:
        print(f"$ {self.command} {' '.join(quote(a) for a in args)}")
        done = subprocess.run(
            [sys.executable, "-m", "cutover", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode not in (0, 1):
            raise SystemExit(f"cutover {args[0]} failed: {done.stderr}")
        output = show(done.stdout).rstrip()
        if output:
            print(output)
        return done.stdout

    # -- traffic -------------------------------------------------------------------------

    def traffic(self, requests: int) -> int:
        """``requests`` calls from the users, through the proxy; how many went to api-v2."""
        calls = [(USERS[n % len(USERS)], n) for n in range(requests)]
        with ThreadPoolExecutor(8) as pool:
            sent = sum(pool.map(lambda call: self.call(*call), calls))
        return sent

    def call(self, user: str, number: int) -> int:
        client = _client(self.proxy)
        headers = {"Authorization": f"Bearer {token(user)}"}
        kind = number % 5
        if kind == 0:
            client.get("/api/v1/usage", headers=headers)
        elif kind == 1:
            features = {"age": 20 + number % 50, "segment": "returning", "visits": number % 23}
            client.post("/api/v1/predict", json={"features": features}, headers=headers)
        elif kind == 2:
            customers = [
                {"id": f"c-{(number * 7 + k) % 97:02}", "spend": (number * k) % 900, "visits": k}
                for k in range(3)
            ]
            client.post("/api/v1/segment", json={"customers": customers}, headers=headers)
        elif kind == 3:
            client.get("/api/v1/recommendations", params={"limit": 3}, headers=headers)
        else:
            client.get("/api/v1/health")
        return 1

    def served(self, since: float) -> tuple[int, int]:
        """Requests served, and comparisons, counted in the store since ``since``."""
        arms = self.store.windows("api-v2", since, histograms=False)
        calls = sum(arms[arm]["calls"] - arms[arm]["offpath"] for arm in Arm)
        return calls, sum(arms[arm]["comparisons"] for arm in Arm)

    def day(self) -> list[Decision]:
        """A simulated day: the clock moves, a day's traffic flows, the controller passes."""
        now = self.clock.advance(DAY)
        state = self.store.state("api-v2")
        compared = state is not None and state.mode.value in ("shadow", "canary")
        sent = self.traffic(REQUESTS_PER_DAY)
        start = now - now % 60
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # until the proxy's counts reach the store
            calls, comparisons = self.served(start)
            if calls >= sent and (not compared or comparisons >= sent):
                break
            time.sleep(0.05)
        decisions = self.controller.tick()
        for decision in decisions:
            self.show(decision)
        if any(d.changed for d in decisions):
            self.wait_for_state()
        return decisions

    def wait_for_state(self, name: str = "api-v2") -> None:
        """Until the proxy routes ``name`` by its stored state (it refreshes every second)."""
        state = self.store.state(name)
        version = state.version if state else 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            health = httpx.get(f"{self.proxy}/-/cutover/health").json()
            if health["migrations"].get(name, {}).get("version") == version:
                return
            time.sleep(0.05)

    def until(self, kinds: set[str], days: int) -> Decision:
        for _ in range(days):
            for decision in self.day():
                if decision.kind in kinds:
                    return decision
        raise SystemExit(f"the demo expected one of {sorted(kinds)} within {days} days")

    def show(self, decision: Decision) -> None:
        at = (decision.at - self.began) / DAY
        print(f"  day {at:4.1f}  {decision.actor:<14} {decision.kind:<16} {decision.reason}")


_clients: dict[tuple[str, int], httpx.Client] = {}


def _client(base: str) -> httpx.Client:
    """One kept-alive client per thread."""

    key = (base, threading.get_ident())
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = httpx.Client(base_url=base, timeout=30)
    return client


def quote(arg: str) -> str:
    return f"'{arg}'" if (" " in arg or "$" in arg or "*" in arg) else arg


def lines_with(*words: str) -> Callable[[str], str]:
    return lambda out: "\n".join(line for line in out.splitlines() if any(w in line for w in words))


@contextmanager
def stopped_on_signals() -> Iterator[None]:
    """SIGTERM ends the demo like Ctrl-C, so every process it started is stopped."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> None:
    started = time.perf_counter()
    build_v2()
    folder = Path(os.environ.get("DEMO_FOLDER") or tempfile.mkdtemp(prefix="cutover-api-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    demo = Demo(folder)
    try:
        with stopped_on_signals():
            run(demo)
    finally:
        demo.stop_all()
        for client in _clients.values():
            client.close()
    print(f"\nDone in {time.perf_counter() - started:.1f}s; the store and logs are in {folder}")


def run(demo: Demo) -> None:
    banner("1. v1 (FastAPI), v2 release 2.0.0 (TypeScript), and cutover proxy in front")
    demo.start_v1()
    demo.start_v2("2.0.0", WRONG_MOBILE)
    demo.start_proxy()
    sent = demo.traffic(200)
    print(f"  {sent} requests from {len(USERS)} users: every answer from v1 (no state yet)")

    banner("2. enable-shadow-mode: v2 answers a copy of every request, v1 still serves")
    demo.cli(
        "set", "api-v2", "--mode", "shadow", "--sample", "1.0", "--reason", "enable-shadow-mode"
    )
    demo.wait_for_state()
    demo.day()
    demo.cli("drifts", "api-v2", "--group")
    demo.cli("stats", "api-v2", "--window", "1d", "--by", "route")

    banner("3. deploy the fix: v2 2.0.1 rounds halves to even, and has v1's mobile JWT secret")
    demo.stop("v2")
    demo.start_v2("2.0.1", SECRETS["mobile"])
    demo.clock.advance(3600)  # deployed an hour later: the plan judges v2 2.0.1 alone
    print("  v2 restarted an hour later: RELEASE=2.0.1, JWT_SECRETS as v1's")

    banner("4. the runbook as a plan: the controller walks it while the traffic flows")
    plan = str(PLAN.relative_to(ROOT))
    demo.cli("rollout", "start", plan, "--reason", "CohortLens v2, beta signed off")
    demo.until({"approval_needed"}, 10)
    demo.cli("rollout", "status", "api-v2", show=lines_with("step", "errors", "same-answers"))
    demo.cli(
        "rollout", "approve", "api-v2", "--by", "team-lead", "--reason",
        "confidence gate: 7 days of shadow, error rate < 0.1%",
    )  # fmt: skip
    demo.until({"complete"}, 20)
    demo.cli("status")

    banner("5. complete-v1-deprecation: v1's export answers 410 Gone")
    demo.cli("set", "api-v1-export", "--mode", "new", "--reason", "complete-v1-deprecation")
    demo.wait_for_state("api-v1-export")
    answer = httpx.get(
        f"{demo.proxy}/api/v1/export", headers={"Authorization": f"Bearer {token(USERS[0])}"}
    )
    print(f"$ curl -i {demo.proxy}/api/v1/export")
    print(f"HTTP/1.1 {answer.status_code} {answer.reason_phrase}")
    for name in ("content-type", "deprecation", "sunset", "link"):
        print(f"{name}: {answer.headers.get(name)}")
    print(answer.text)

    banner("6. the kill switch V2_ENABLED=false: CUTOVER_FORCE_API_V2=legacy")
    demo.stop("proxy")
    demo.start_proxy(CUTOVER_FORCE_API_V2="legacy")
    health = httpx.get(f"{demo.proxy}/-/cutover/health").json()["migrations"]["api-v2"]
    usage = httpx.get(
        f"{demo.proxy}/api/v1/health", headers={"Authorization": f"Bearer {token(USERS[0])}"}
    ).json()
    print(f"  the proxy routes api-v2 by {json.dumps(health)}")
    print(f"  GET /api/v1/health answered by version {usage['version']} (v1)")

    banner("cutover history api-v2")
    demo.cli("history", "api-v2")


if __name__ == "__main__":
    main()
