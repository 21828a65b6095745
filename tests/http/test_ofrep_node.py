"""One unit, one arm, in every language: Node's OpenFeature SDK over OFREP against a running
``cutover serve``, cutover's Python provider, ``cutover.choose`` and the routing vectors agree."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext

import cutover
from cutover import operations
from cutover.flags.openfeature import CutoverProvider
from cutover.model import Arm, Mode
from cutover.store import open_store

from ..conftest import need, need_postgres
from ..helpers import eventually, quiet
from .conftest import Server

HERE = Path(__file__).resolve().parent
# OpenFeature has no empty targeting key (it is TARGETING_KEY_MISSING): those vectors are
# checked against cutover.choose in test_choose.py.
VECTORS = [
    vector
    for vector in json.loads((HERE.parents[1] / "docs" / "routing-vectors.json").read_text())[
        "vectors"
    ]
    if vector["unit"]
]
PACKAGES = [
    "@openfeature/server-sdk@1",
    "@openfeature/ofrep-core@0",
    "@openfeature/ofrep-provider@0",
]
UNITS = [f"user-{i}" for i in range(10_000)]
PERCENTS = ["0.5", "5", "25", "50", "99.99"]  # the vectors' percents; 10,000 units at three
FULL = {"5", "50", "99.99"}
POLL_MS = 200


# A first install from npm can take minutes on a slow link; pytest's timeout counts fixtures.
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="session")
def node_packages() -> Path:
    """A folder with the OpenFeature packages from npm, in the user's cache so that later
    sessions reuse it; a lock keeps two test workers from installing into it at once."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        need("node and npm are not installed (the cross-language test runs Node's SDK)")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = cache / "cutover-tests" / "node-openfeature"
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / ".installed"
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text() == " ".join(PACKAGES):
            return folder
        (folder / "package.json").write_text('{"private": true, "type": "module"}\n')
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", *PACKAGES],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=540,
            check=False,
        )
        if done.returncode != 0:
            need(f"npm could not install {' '.join(PACKAGES)}: {done.stderr.strip()[-500:]}")
        marker.write_text(" ".join(PACKAGES))
    return folder


class NodeClient:
    """The Node process: one JSON question per line in, one answer per line out."""

    def __init__(self, folder: Path, server: Server) -> None:
        script = folder / "ofrep_client.mjs"
        shutil.copyfile(HERE / "ofrep_client.mjs", script)  # resolves the packages beside it
        self.process = subprocess.Popen(
            ["node", str(script), server.url, server.tokens["viewer"]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._read() == {"ready": True}

    def _read(self) -> Any:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            assert self.process.stderr is not None
            raise AssertionError(f"the Node client died: {self.process.stderr.read()[-2000:]}")
        return json.loads(line)

    def send(self, **question: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(question) + "\n")
        self.process.stdin.flush()

    def ask(self, **question: Any) -> Any:
        self.send(**question)
        return self._read()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def node(
    node_packages: Path, serve: Callable[..., Server], pg_url: str
) -> Iterator[tuple[NodeClient, Server]]:
    need_postgres()
    server = serve(pg_url)
    client = NodeClient(node_packages, server)
    try:
        yield client, server
    finally:
        client.close()


def put_all(store_url: str, percent: float, names: set[str]) -> int:
    """Set every migration in ``names`` to a canary at ``percent``; the highest version."""
    store = open_store(store_url)
    try:
        versions = []
        for name in sorted(names):
            change = operations.Change(mode=Mode.CANARY, percent=percent)
            decision = operations.set_state(
                store, name, change, reason="test", actor="tests", clock=time.time
            )
            versions.append(decision.new.version)
        return max(versions)
    finally:
        store.close()


@pytest.mark.slow
def test_node_python_choose_and_the_vectors_give_every_unit_the_same_arm(
    node: tuple[NodeClient, Server],
) -> None:
    client, server = node
    runtime = quiet(server.store_url, wait=5)
    api.set_provider_and_wait(CutoverProvider())
    python = api.get_client()
    names = {v["migration"] for v in VECTORS} | {"checkout"}
    try:
        for percent in PERCENTS:
            version = put_all(server.store_url, float(percent), names)
            runtime.refresh()
            assert eventually(lambda v=version: _version(server, "checkout") == v), (
                "the server did not pick up the new states"
            )
            units = UNITS if percent in FULL else UNITS[:500]
            pairs = [["checkout", u] for u in units]
            pairs += [[v["migration"], v["unit"]] for v in VECTORS]
            results = client.ask(op="evaluate", pairs=pairs)["results"]
            assert all("variant" in r for r in results), [r for r in results if "error" in r][:3]
            from_node = [r["variant"] for r in results]
            from_python = [
                python.get_string_value(flag, "?", EvaluationContext(targeting_key=unit))
                for flag, unit in pairs
            ]
            from_choose = [cutover.choose(flag, unit=unit).value for flag, unit in pairs]
            assert from_node == from_python == from_choose, percent
            assert from_node[len(units) :] == [v["arm_at_percent"][percent] for v in VECTORS]
            assert all(r["value"] is (r["variant"] == Arm.NEW.value) for r in results)
    finally:
        api.shutdown()


def _version(server: Server, name: str) -> int:
    with server.client("viewer") as http:
        answer = http.post(
            f"/ofrep/v1/evaluate/flags/{name}", json={"context": {"targetingKey": "probe"}}
        )
        return int(answer.json().get("metadata", {}).get("version", -1))


def start_checkout(server: Server, percent: float) -> None:
    """Store the first state of `checkout` and wait until the server answers by it."""
    put_all(server.store_url, percent, {"checkout"})
    assert eventually(lambda: _version(server, "checkout") == 1)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["watch", "watchBulk"])
def test_a_state_change_reaches_node_within_its_polling_interval(
    node: tuple[NodeClient, Server], how: str
) -> None:
    """Polling one flag as the server-side provider does, or the bulk evaluation with its ETag
    as a static-context provider does: the change arrives on the poll after the server has it."""
    client, server = node
    start_checkout(server, 0)
    assert client.ask(op="evaluate", pairs=[["checkout", "user-1"]])["results"][0]["value"] is False
    watch = {"flag": "checkout", "unit": "user-1", "expect": True, "timeoutMs": 20_000}
    client.send(op=how, intervalMs=POLL_MS, **watch)
    time.sleep(1.0)  # the client is polling the old answer
    changed_at = time.monotonic()
    put_all(server.store_url, 100, {"checkout"})
    seen = client._read()
    delay = time.monotonic() - changed_at
    assert seen["seenAfterMs"] is not None, "Node never saw the change"
    if how == "watchBulk":
        assert seen["notModified"] >= 2, seen  # it polled the unchanged answer with its ETag
    # NOTIFY brings the state to the server at once; the client sees it on its next poll.
    # The bound allows one refresh interval (1 s) in case NOTIFY is late, and a second for a
    # loaded machine.
    assert delay < POLL_MS / 1000 + 2.0, f"Node saw the change {delay:.2f}s after it was made"


@pytest.mark.slow
def test_wrong_or_missing_tokens_get_ofreps_errors_in_node(
    node: tuple[NodeClient, Server],
) -> None:
    client, server = node
    start_checkout(server, 50)
    good = client.ask(op="api", flag="checkout", unit="u", auth="viewer")
    assert good["single"]["status"] == 200 and good["single"]["value"]["key"] == "checkout"
    assert good["bulk"]["status"] == 200 and good["bulk"]["etag"]
    assert [f["key"] for f in good["bulk"]["value"]["flags"]] == ["checkout"]
    assert good["bulkAgain"] == {"status": 304, "value": None}
    for auth in ("wrong", "none"):
        refused = client.ask(op="api", flag="checkout", unit="u", auth=auth)
        for call in ("single", "bulk"):
            assert refused[call] == {"errorClass": "OFREPApiUnauthorizedError", "status": 401}
        through_sdk = client.ask(op="evaluate", pairs=[["checkout", "u"]], domain=auth)
        assert through_sdk["results"][0]["error"] == "GENERAL"
    missing = client.ask(op="evaluate", pairs=[["nope", "u"], ["checkout", ""]])["results"]
    assert [r["error"] for r in missing] == ["FLAG_NOT_FOUND", "TARGETING_KEY_MISSING"]
