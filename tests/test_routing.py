"""Routing: the bucket formula against an independent MurmurHash3; its promises as properties."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cutover.errors import InvalidInput
from cutover.model import Arm, Mode, State
from cutover.routing import (
    BUCKETS,
    bucket,
    compile_route,
    env_override,
    override_variable,
    serving_arm,
    threshold,
)

VECTORS = Path(__file__).parent.parent / "docs" / "routing-vectors.json"


def murmur3_x86_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3_x86_32 written from the reference algorithm, independent of mmh3."""
    c1, c2, mask = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
    h = seed & mask
    rounded = len(data) - len(data) % 4
    for (block,) in struct.iter_unpack("<I", data[:rounded]):
        k = (block * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        k = (k * c2) & mask
        h ^= k
        h = ((h << 13) | (h >> 19)) & mask
        h = (h * 5 + 0xE6546B64) & mask
    tail = data[rounded:]
    k = 0
    for position, byte in enumerate(tail):
        k |= byte << (8 * position)
    if tail:
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        k = (k * c2) & mask
        h ^= k
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    h ^= h >> 16
    return h


def reference_bucket(migration: str, unit: str) -> int:
    return murmur3_x86_32(f"{migration}:{unit}".encode()) % BUCKETS


def test_reference_murmur_matches_published_values() -> None:
    assert murmur3_x86_32(b"") == 0
    assert murmur3_x86_32(b"", 1) == 0x514E28B7
    assert murmur3_x86_32(b"hello") == 0x248BFA47
    assert murmur3_x86_32(b"The quick brown fox jumps over the lazy dog") == 0x2E4FF723


def test_shipped_vectors_match_the_formula() -> None:
    vectors = json.loads(VECTORS.read_text(encoding="utf-8"))
    assert len(vectors["vectors"]) >= 50
    for vector in vectors["vectors"]:
        expected = vector["bucket"]
        assert bucket(vector["migration"], vector["unit"]) == expected
        assert reference_bucket(vector["migration"], vector["unit"]) == expected
        percent_arm = vector["arm_at_percent"]
        for percent, arm in percent_arm.items():
            assert (expected < threshold(float(percent))) == (arm == "new")


@settings(max_examples=300)
@given(st.text(min_size=1, max_size=40), st.text(max_size=60))
def test_bucket_equals_the_independent_implementation(migration: str, unit: str) -> None:
    assert bucket(migration, unit) == reference_bucket(migration, unit)


@given(st.text(max_size=30), st.integers(0, 10_000), st.integers(0, 10_000))
def test_raising_the_percent_never_moves_a_unit_back_to_legacy(
    unit: str, low_bp: int, high_bp: int
) -> None:
    low, high = sorted((low_bp / 100, high_bp / 100))
    before = serving_arm("codec", compile_route(State(mode=Mode.CANARY, percent=low)), unit)
    after = serving_arm("codec", compile_route(State(mode=Mode.CANARY, percent=high)), unit)
    assert not (before is Arm.NEW and after is Arm.LEGACY)


@given(st.text(max_size=30), st.integers(0, 10_000))
def test_routing_is_sticky(unit: str, basis_points: int) -> None:
    route = compile_route(State(mode=Mode.CANARY, percent=basis_points / 100))
    assert len({serving_arm("codec", route, unit) for _ in range(5)}) == 1


@pytest.mark.parametrize("percent", [0.01, 1, 5, 25, 50, 75, 99.99])
def test_share_of_new_is_within_one_and_a_half_points_over_100k_units(percent: float) -> None:
    route = compile_route(State(mode=Mode.CANARY, percent=percent))
    served = sum(serving_arm("codec", route, f"user-{i}") is Arm.NEW for i in range(100_000))
    assert abs(served / 1000 - percent) <= 1.5


def test_migrations_split_units_independently() -> None:
    units = [f"tenant-{i}" for i in range(100_000)]
    a = compile_route(State(mode=Mode.CANARY, percent=50))
    in_a = {u for u in units if serving_arm("codec", a, u) is Arm.NEW}
    in_b = {u for u in units if serving_arm("pricing", a, u) is Arm.NEW}
    overlap = len(in_a & in_b) / len(units)
    # Independent halves overlap on about a quarter of the units; identical ones on a half.
    assert abs(overlap - 0.25) < 0.01


def test_threshold_edges() -> None:
    assert threshold(0) == 0
    assert threshold(100) == BUCKETS
    assert threshold(0.29) == 29
    legacy_all = compile_route(State(mode=Mode.CANARY, percent=0))
    new_all = compile_route(State(mode=Mode.CANARY, percent=100))
    assert all(serving_arm("m", legacy_all, i) is Arm.LEGACY for i in range(2000))
    assert all(serving_arm("m", new_all, i) is Arm.NEW for i in range(2000))


def test_pins_come_before_the_percent() -> None:
    state = State(mode=Mode.CANARY, percent=0, pins_new=frozenset({"staff-1"}))
    route = compile_route(state)
    assert serving_arm("codec", route, "staff-1") is Arm.NEW
    everyone = compile_route(
        State(mode=Mode.CANARY, percent=100, pins_legacy=frozenset({"tenant-9"}))
    )
    assert serving_arm("codec", everyone, "tenant-9") is Arm.LEGACY
    # A kill switch beats pins: legacy mode serves everyone with legacy.
    killed = compile_route(state.evolve(mode=Mode.LEGACY))
    assert serving_arm("codec", killed, "staff-1") is Arm.LEGACY


def test_environment_override() -> None:
    assert override_variable("api-v2.users") == "CUTOVER_FORCE_API_V2_USERS"
    assert env_override("codec", {"CUTOVER_FORCE_CODEC": "legacy"}) is Mode.LEGACY
    assert env_override("codec", {"CUTOVER_FORCE_CODEC": " refactored_only "}) is Mode.NEW
    assert env_override("codec", {"CUTOVER_FORCE_CODEC": ""}) is None
    assert env_override("codec", {}) is None
    with pytest.raises(InvalidInput, match=r"CUTOVER_FORCE_CODEC='shadow'.*legacy or new"):
        env_override("codec", {"CUTOVER_FORCE_CODEC": "shadow"})
    route = compile_route(State(mode=Mode.CANARY, percent=100), Mode.LEGACY)
    assert route.mode is Mode.LEGACY and route.effective_percent == 0


@pytest.mark.parametrize("percent", ["0.5", "5", "25", "50", "99.99"])
def test_every_path_gives_each_vector_its_arm(percent: str) -> None:
    """The wrapped call's sync and async paths, the proxy's migration and the flag API route
    each vector's unit as the vectors say."""
    from cutover.flags import _core as flags
    from cutover.migration import Migration, _unit_get
    from cutover.proxy._server import HttpMigration

    vectors = json.loads(VECTORS.read_text(encoding="utf-8"))["vectors"]
    state = State(mode=Mode.CANARY, percent=float(percent))
    for name in {v["migration"] for v in vectors}:
        route = compile_route(state)
        wrapped = Migration(name, str, str)
        proxied = HttpMigration(name)
        for vector in (v for v in vectors if v["migration"] == name):
            expected = Arm(vector["arm_at_percent"][percent])
            unit = vector["unit"]
            assert serving_arm(name, route, unit) is expected
            assert _unit_get() is None
            assert wrapped._serves_new(route, unit) is (expected is Arm.NEW), vector
            assert proxied._serves_new(route, unit) is (expected is Arm.NEW), vector
            assert flags._arm(flags.migration_for(name), route, unit) is expected


def test_a_unit_with_a_lone_surrogate_has_a_stable_bucket_of_its_own() -> None:
    # mmh3 5.3 crashes the process on such a string: its surrogatepass bytes are hashed.
    unit = "user-\udc80"
    key = f"codec:{unit}".encode("utf-8", "surrogatepass")
    assert bucket("codec", unit) == murmur3_x86_32(key) % BUCKETS
    assert serving_arm("codec", compile_route(State(mode=Mode.CANARY, percent=50)), unit) is (
        Arm.NEW if murmur3_x86_32(key) % BUCKETS < 5000 else Arm.LEGACY
    )
