"""Golden vectors end to end: record legacy's answers, verify implementations against them,
and turn stored drift samples into vectors, through the real ``cutover`` command."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

import cutover
from cutover.compare import structural
from cutover.replay import _golden as golden
from cutover.runtime import Runtime

from ..helpers import cutover_cli, put
from . import codecs


def record(tmp_path: Path, *extra: str) -> Path:
    out = tmp_path / "decode.jsonl"
    done = cutover_cli(
        "golden", "record", "payments.decode", "--from", "tests.golden.payments:decoding",
        "-o", str(out), *extra,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def verify(path: Path, target: str, *extra: str) -> object:
    return cutover_cli("golden", "verify", str(path), "--target", target, *extra)


def test_record_writes_a_reviewable_file_and_legacy_verifies(tmp_path: Path) -> None:
    out = record(tmp_path, "--inputs", "tests.golden.codecs:frames")
    lines = out.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["cutover_golden"] == 1 and header["vectors"] == 6 == len(lines) - 1
    assert header["migration"] == "payments.decode"
    assert header["legacy"] == "tests.golden.payments:decoding"
    assert header["compare"] == "structural(ignore=['$.raw'])"
    vectors = golden.read(out).vectors
    assert [v.label for v in vectors] == sorted(v.label for v in vectors)  # stable order
    refused = [v for v in vectors if v.raised is not None]
    assert {(v.raised.type, v.raised.message) for v in refused} == {
        ("builtins:ValueError", "currency 'EURO' is not 3 letters"),
        ("builtins:ValueError", "a frame has 5 fields, this one 1"),
    }
    eur = next(v for v in vectors if v.raised is None and v.output["currency"] == "EUR")
    assert eur.output["tags"] == ("a", "b") and eur.output["at"].utcoffset().seconds == 3600
    assert eur.output["kind"] is codecs.Kind.PAYMENT
    # Recording the same inputs again gives the same lines, header time aside.
    again = record(tmp_path, "--inputs", "tests.golden.codecs:frames")
    assert again.read_text().splitlines()[1:] == lines[1:]

    for target in ("tests.golden.codecs:legacy_decode", "tests.golden.codecs:new_decode"):
        passed = verify(out, target)
        assert passed.returncode == 0, passed.stdout + passed.stderr
        assert "compared by migration 'payments.decode'" in passed.stdout


def test_a_planted_change_fails_with_the_exact_diff(tmp_path: Path) -> None:
    out = record(tmp_path, "--inputs", "tests.golden.codecs:frames")
    failed = verify(out, "tests.golden.codecs:drifting_decode")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "$.amount: legacy Decimal('1234.56'), new Decimal('1235')" in failed.stdout
    assert failed.stdout.count("legacy and new differ on") == 1

    # Decimals are numbers to the gates: 1234.56 -> 1235 moved by 0.0356%.
    assert verify(out, "tests.golden.codecs:drifting_decode", "--max-delta", "0.1%").returncode == 0
    assert (
        verify(out, "tests.golden.codecs:drifting_decode", "--max-delta", "0.01%").returncode == 1
    )

    as_json = verify(out, "tests.golden.codecs:drifting_decode", "--json")
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert report["passed"] is False
    [differing] = report["golden"]["differing"]
    assert differing["diff"] == ["$.amount: legacy Decimal('1234.56'), new Decimal('1235')"]
    assert differing["fingerprint"] == "$.amount"
    assert report["overall"]["requests"] == 6


def test_inputs_from_a_file_and_junit(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text(
        '{"$bytes": "UHxFVVJ8MTAwMC41MHwyMDI2LTAxLTAyVDAzOjA0OjAwWnw="}\n'
        '{"args": [{"$bytes": "UHxFVVJPfDF8MjAyNi0wMS0wMlQwMzowNDowMHw="}],'
        ' "kwargs": {"strict": false}}\n'
    )
    out = record(tmp_path, "--inputs-file", str(inputs))
    vectors = golden.read(out).vectors
    assert [v.kwargs for v in vectors] == [{}, {"strict": False}] or [
        v.kwargs for v in vectors
    ] == [{"strict": False}, {}]
    junit = tmp_path / "golden.xml"
    failed = verify(out, "tests.golden.codecs:drifting_decode", "--junit", str(junit))
    assert failed.returncode == 1 and "<failure" in junit.read_text()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--inputs", "tests.golden.codecs:unencodable_inputs"),
         "input 2 (<object object at"),
        (("--inputs", "tests.golden.codecs:nothing_here"),
         "--inputs 'tests.golden.codecs:nothing_here': tests.golden.codecs has no nothing_here"),
        ((), "give the inputs one way"),
    ],
)  # fmt: skip
def test_bad_input_is_one_sentence_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], words: str
) -> None:
    done = cutover_cli(
        "golden", "record", "payments.decode", "--from", "tests.golden.codecs:legacy_decode",
        "-o", str(tmp_path / "x.jsonl"), *args,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr
    if "object" in words:
        assert "type builtins.object at $.args[0]" in done.stderr
    missing = verify(tmp_path / "none.jsonl", "tests.golden.codecs:new_decode")
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_drift_samples_become_vectors(runtime: Runtime, sqlite_url: str, tmp_path: Path) -> None:
    decoding = cutover.Migration(
        "payments.decode",
        codecs.legacy_decode,
        codecs.drifting_decode,
        compare=structural(ignore=["$.raw"]),
    )
    put(runtime, "payments.decode", mode="shadow", sample=1.0)
    frames = [f for f in codecs.frames() if isinstance(f, bytes)]
    for frame in frames:
        with contextlib.suppress(ValueError):  # legacy refuses one; the caller sees it
            decoding(frame)
    assert runtime.flush(drain_timeout=10)
    [sample] = runtime.store.drift_samples("payments.decode", 10)
    assert sample.input["args"] == [
        {"$bytes": "UHxHQlB8MTIzNC41NnwyMDI2LTAxLTAyVDAzOjA0OjAwKzAxOjAwfHZpcA=="}
    ]

    out = tmp_path / "regressions.jsonl"
    exported = cutover_cli(
        "--store", sqlite_url, "drifts", "payments.decode", "--export-golden", str(out),
        "--from", "tests.golden.codecs:legacy_decode",
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    assert "1 of 1 drift samples exported" in exported.stdout
    [vector] = golden.read(out).vectors
    assert vector.args == (frames[2],) and vector.group == "$.amount"
    assert vector.output["amount"] == codecs.decimal.Decimal("1234.56")

    # Without --from, the legacy answer the sample kept is the expected one: the same here.
    kept = tmp_path / "kept.jsonl"
    cutover_cli("--store", sqlite_url, "drifts", "payments.decode", "--export-golden", str(kept))
    assert golden.read(kept).vectors == golden.read(out).vectors

    assert verify(out, "tests.golden.codecs:new_decode").returncode == 0
    failed = verify(out, "tests.golden.codecs:drifting_decode", "--compare",
                    "tests.golden.test_golden:IGNORE_RAW")  # fmt: skip
    assert failed.returncode == 1
    assert "$.amount: legacy Decimal('1234.56'), new Decimal('1235')" in failed.stdout
    # Exporting again adds nothing: one vector per input.
    cutover_cli("--store", sqlite_url, "drifts", "payments.decode", "--export-golden", str(out))
    assert len(golden.read(out).vectors) == 1


IGNORE_RAW = structural(ignore=["$.raw"])


class Opaque:
    """An argument typed JSON cannot hold: its drift samples can only describe it."""

    def __repr__(self) -> str:
        return "Opaque()"


def test_samples_that_cannot_replay_are_skipped_and_drifts_feed_record(
    runtime: Runtime, sqlite_url: str, tmp_path: Path
) -> None:
    parity = cutover.Migration("parity", lambda x, y=0: 1, lambda x, y=0: 2)
    put(runtime, "parity", mode="shadow", sample=1.0)
    parity(Opaque())
    parity((1, 2), y=b"\x00")
    assert runtime.flush(drain_timeout=10)
    out = tmp_path / "parity.jsonl"
    exported = cutover_cli(
        "--store", sqlite_url, "drifts", "parity", "--export-golden", str(out), "--json"
    )
    assert exported.returncode == 0, exported.stderr
    report = json.loads(exported.stdout)
    assert [s["reason"] for s in report["skipped"]] == ["its input could not be kept exactly"]
    [vector] = golden.read(out).vectors
    assert vector.args == ((1, 2),) and vector.kwargs == {"y": b"\x00"} and vector.output == 1

    recorded = tmp_path / "recorded.jsonl"
    done = cutover_cli(
        "--store", sqlite_url, "golden", "record", "parity", "--from-drifts",
        "--from", "tests.golden.codecs:legacy_fee", "-o", str(recorded),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "skipped drift sample" in done.stdout
    [vector] = golden.read(recorded).vectors
    assert vector.raised is not None and vector.raised.type == "builtins:TypeError"


def test_a_legacy_exception_kept_by_a_sample_is_the_expected_answer(
    runtime: Runtime, sqlite_url: str, tmp_path: Path
) -> None:
    def legacy(x: int) -> int:
        if x < 0:
            raise ValueError(f"{x} is negative")
        return x

    checked = cutover.Migration("checked", legacy, abs)
    put(runtime, "checked", mode="shadow", sample=1.0)
    with contextlib.suppress(ValueError):
        checked(-3)
    assert runtime.flush(drain_timeout=10)
    out = tmp_path / "checked.jsonl"
    done = cutover_cli("--store", sqlite_url, "drifts", "checked", "--export-golden", str(out))
    assert done.returncode == 0, done.stderr
    [vector] = golden.read(out).vectors
    assert vector.raised == golden.Raised("builtins:ValueError", "-3 is negative")
    assert vector.group == "$ (legacy raised ValueError)"
