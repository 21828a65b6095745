"""The OFREP rate limit's token buckets, on a clock the tests move: bursts, refills, separate
clients, bounded memory, and the option's spelling."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from cutover.cli import cli
from cutover.errors import InvalidInput
from cutover.http._ratelimit import Rate, RateLimiter, retry_after


class Ticks:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_beyond_the_limit_waits_as_long_as_the_bucket_takes_to_refill() -> None:
    ticks = Ticks()
    limiter = RateLimiter(Rate(0.5, 3), now=ticks)
    assert [limiter.take("alice") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("alice") == pytest.approx(2.0)  # one request at 0.5/s
    ticks.now += 0.5
    wait = limiter.take("alice")
    assert wait == pytest.approx(1.5)
    assert retry_after(wait) == "2"
    ticks.now += 1.5
    assert limiter.take("alice") == 0.0
    assert limiter.take("alice") == pytest.approx(2.0)  # the refilled request is spent


def test_waiting_longer_refills_no_more_than_the_burst() -> None:
    ticks = Ticks()
    limiter = RateLimiter(Rate(10, 2), now=ticks)
    assert limiter.take("alice") == 0.0
    ticks.now += 3600
    assert [limiter.take("alice") for _ in range(3)] == [0.0, 0.0, pytest.approx(0.1)]


def test_each_client_has_its_own_bucket() -> None:
    limiter = RateLimiter(Rate(1, 1), now=Ticks())
    assert limiter.take("token alice") == 0.0
    assert limiter.take("token alice") > 0
    assert limiter.take("token bob") == 0.0
    assert limiter.take("address 10.0.0.1") == 0.0
    assert limiter.take("token bob") > 0


def test_retry_after_is_whole_seconds_never_early() -> None:
    assert [retry_after(w) for w in (0.001, 1.0, 1.2, 9.95)] == ["1", "1", "2", "10"]


def test_idle_clients_are_forgotten_and_the_count_is_bounded() -> None:
    ticks = Ticks()
    limiter = RateLimiter(Rate(1, 5), now=ticks, max_clients=50)
    for i in range(40):
        limiter.take(f"client {i}")
    assert len(limiter) == 40
    ticks.now += 5  # every bucket is full again: keeping it changes nothing
    limiter.take("newcomer")
    assert len(limiter) == 1
    for i in range(200):
        limiter.take(f"busy {i}")
    assert len(limiter) == 50
    # The least recently seen were dropped; the most recent keep what they spent.
    assert [limiter.take("busy 199") for _ in range(4)] == [0.0] * 4
    assert limiter.take("busy 199") > 0


def test_threads_together_get_exactly_the_burst() -> None:
    limiter = RateLimiter(Rate(1, 100), now=Ticks())
    passed = []
    start = threading.Barrier(8)

    def spend() -> None:
        start.wait()
        passed.extend(w for w in (limiter.take("shared") for _ in range(50)) if w == 0.0)

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(passed) == 100


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("50", Rate(50, 50)),
        ("50:200", Rate(50, 200)),
        ("0.5", Rate(0.5, 1)),
        (" 2.5 : 3 ", Rate(2.5, 3)),
        ("off", None),
        ("", None),
    ],
)
def test_the_option_reads_rate_and_burst(text: str, rate: Rate | None) -> None:
    assert Rate.parse(text, "--ofrep-rate") == rate


@pytest.mark.parametrize("text", ["0", "-1", "fast", "5:0", "5:1.5", "1e3", "5:"])
def test_a_bad_rate_is_one_sentence_naming_the_option(text: str) -> None:
    with pytest.raises(InvalidInput, match=r"^--ofrep-rate .*(like 50 or 50:200|at least 1)"):
        Rate.parse(text, "--ofrep-rate")


@pytest.mark.parametrize(
    ("args", "env"), [(["--ofrep-rate", "fast"], {}), ([], {"CUTOVER_OFREP_RATE": "fast"})]
)
def test_serve_takes_the_rate_from_the_option_or_the_environment(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    store = f"sqlite:///{tmp_path / 'rate.db'}"
    # A bad --allowed-host fails later, so a rate that went unread cannot start a server.
    command = ["--store", store, "serve", "--allowed-host", "no such host", *args]
    result = CliRunner().invoke(cli, command, env=env)
    assert isinstance(result.exception, InvalidInput)
    assert str(result.exception).startswith("--ofrep-rate 'fast' must be requests per second")
