"""``cutover audit`` beside reladiff and a plain hash scan, on two PostgreSQL databases.

Two databases on the ``--server`` PostgreSQL, ``cutover_bench_a`` (the source) and
``cutover_bench_b`` (the target), hold the same table of ``--rows`` rows: an integer primary
key and five columns (text, numeric(12,2), double precision, timestamptz, integer; the text
is NULL in one row of 97 and the integer in one of 50). Keys run from 1 with one gap every
hundred (as deletions leave them), so rows that exist only in the target can sit anywhere in
the key range. The source is filled with one ``INSERT ... SELECT generate_series``, keyed
afterwards and vacuumed; the target is a copy of it (``CREATE DATABASE ... TEMPLATE``). Every
column is a function of the key, so any row can be rebuilt in SQL.

Each case writes its differences into the target, is measured, and is undone (then a hash of
both tables must match again):

    none   no difference
    16     16 differing keys: 5 missing from the target, 5 extra in it, 6 changed
    1pct   1% of the rows: 30% missing, 30% extra, 40% changed

Changes are the smallest an exact comparison must see: a trailing space on the text (or ''
for NULL), one cent, 1e-6 on the float, one millisecond, and +1 on the integer (or 0 for
NULL), each column in turn. Three things are timed per case, ``--repeat`` times each in
rotating order, and the median is reported (with every run):

- ``cutover audit --source A --target B --table items --key id --columns ... --json FILE``:
  the real command line, as a process of its own;
- reladiff (the maintained data-diff fork) with the same key and columns and
  ``--threads 2`` (cutover's default of two queries per database), as a process in a
  virtual environment of its own (``bench/.venv-reladiff``, created on first use: reladiff
  is no dependency of cutover). The two URLs name two databases, so reladiff runs its
  cross-database algorithm (hashdiff: checksums of key ranges, bisected down to 16,384 rows
  that are downloaded and compared). ``--skip-sort-results`` is needed: reladiff 0.6.0 sorts
  its differing rows and fails on a NULL among them (an error, no output, exit status 0);
- the anchor: one query a database summing a 64-bit hash of every row's text,
  ``SELECT sum(('x' || substr(md5(items::text), 1, 16))::bit(64)::bigint) FROM items``,
  on A then B (``hashscan_sequential``) and on both at once (``hashscan_parallel``). It says
  whether the tables differ, not where;
- with ``--baseline DIR``, the same command line importing cutover from ``DIR`` (another
  version's ``src``, e.g. ``git archive REV src | tar -x -C /tmp/before``), in the same rounds,
  so that a change is measured against what it replaces under the same load.

Both tools must find exactly the seeded keys (cutover: its JSON report's counts, and its
listed keys when the report is not truncated; reladiff: its ``--json`` lines, a key seen only
with ``-`` is missing, only with ``+`` extra, with both changed); otherwise a warning goes to
standard error and the case says ``"correct": false``. ``client_cpu_s`` is the CPU the tool's
process took; ``server_cpu_s`` the CPU of the PostgreSQL backends that ended meanwhile (the
tools' connections close when they exit), read from the postmaster's children times (Linux,
same machine, ``null`` when not readable; other sessions of the server that end meanwhile
count too). The machine's load average before and after the cases is reported: other work
on the machine slows all three alike, but not by the same amount.

    python bench/audit.py [--server postgresql://postgres@127.0.0.1:5432/test] [--rows 1000000]
                          [--repeat 3] [--cases none,16,1pct] [--skip-reladiff]
                          [--reladiff-threads 2] [--reuse] [--keep] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import psycopg

from _harness import emit

HERE = Path(__file__).resolve().parent
RELADIFF_VENV = HERE / ".venv-reladiff"
RELADIFF_REQUIREMENT = "reladiff[postgresql]==0.6.0"
SOURCE_DB, TARGET_DB = "cutover_bench_a", "cutover_bench_b"
TABLE = "items"
KEY = "id"
COLUMNS = ("name", "amount", "score", "updated_at", "quantity")
TYPES = ("text", "numeric(12, 2)", "double precision", "timestamptz", "integer")
CASES = ("none", "16", "1pct")
TARGETS = {"reladiff_over_cutover_at_least": 3.0, "cutover_over_hashscan_at_most": 1.5}

# Every column as a function of the key ``id`` (an integer): the same expressions fill the
# table, add the extra rows and restore changed rows.
ROW = {
    "name": "CASE WHEN mod(id, 97) = 0 THEN NULL ELSE 'item ' || id || ' ' || md5(id::text) END",
    "amount": "(mod(id::bigint * 7919, 10000000) / 100.0)::numeric(12, 2)",
    "score": "mod(id::bigint * 2654435761, 1000003) / 7.0::float8 + 1",
    "updated_at": "timestamptz '2024-01-01 00:00:00+00' + id * interval '17.123457 seconds'",
    "quantity": "CASE WHEN mod(id, 50) = 0 THEN NULL ELSE mod(id::bigint * 31, 1000)::integer END",
}
CHANGE = {
    "name": "coalesce(name || ' ', '')",
    "amount": "amount + 0.01",
    "score": "score + 1e-6",
    "updated_at": "updated_at + interval '1 millisecond'",
    "quantity": "coalesce(quantity + 1, 0)",
}
HASH_SQL = f"SELECT count(*), sum(('x' || substr(md5({TABLE}::text), 1, 16))::bit(64)::bigint)"
HASH_SQL += f" FROM {TABLE}"


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def database_url(server: str, database: str) -> str:
    parts = urllib.parse.urlsplit(server.replace("postgresql+psycopg://", "postgresql://"))
    return urllib.parse.urlunsplit(parts._replace(path=f"/{database}"))


def key_of(k: int) -> int:
    """The ``k``-th key (from 1): one gap every hundred keys."""
    return k + (k - 1) // 99


# -- seeding ---------------------------------------------------------------------------------


def seed(server: str, rows: int) -> dict[str, Any]:
    """Drop and create both databases: fill the source, then copy it as the target."""
    began = time.perf_counter()
    with psycopg.connect(server, autocommit=True) as conn:
        for name in (TARGET_DB, SOURCE_DB):
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {SOURCE_DB}")
    with psycopg.connect(database_url(server, SOURCE_DB), autocommit=True) as conn:
        columns = ", ".join(f"{name} {kind}" for name, kind in zip(COLUMNS, TYPES, strict=True))
        conn.execute(f"CREATE TABLE {TABLE} ({KEY} integer NOT NULL, {columns})")
        started = time.perf_counter()
        expressions = ", ".join(ROW[name] for name in COLUMNS)
        conn.execute(
            f"INSERT INTO {TABLE} SELECT id, {expressions}"
            " FROM (SELECT k + (k - 1) / 99 AS id FROM generate_series(1, %s) AS k) AS keys",
            (rows,),
        )
        inserted = time.perf_counter()
        conn.execute(f"ALTER TABLE {TABLE} ADD PRIMARY KEY ({KEY})")
        keyed = time.perf_counter()
        conn.execute(f"VACUUM ANALYZE {TABLE}")
        vacuumed = time.perf_counter()
        size = conn.execute(
            "SELECT pg_table_size(%s), pg_indexes_size(%s)", (TABLE, TABLE)
        ).fetchone()
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {TARGET_DB} TEMPLATE {SOURCE_DB}")
    return {
        "reused": False,
        "insert_s": round(inserted - started, 1),
        "primary_key_s": round(keyed - inserted, 1),
        "vacuum_analyze_s": round(vacuumed - keyed, 1),
        "seed_s": round(time.perf_counter() - began, 1),
        "table_mb": round(size[0] / 2**20),
        "indexes_mb": round(size[1] / 2**20),
    }


def reusable(server: str, rows: int) -> bool:
    """Both databases exist and hold ``rows`` identical rows."""
    with psycopg.connect(server, autocommit=True) as conn:
        found = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname IN (%s, %s)", (SOURCE_DB, TARGET_DB)
        ).fetchone()[0]
    if found != 2:
        return False
    try:
        source, target = (hash_table(server, name) for name in (SOURCE_DB, TARGET_DB))
    except psycopg.Error:
        return False
    return source == target and source[0] == rows


def drop(server: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        for name in (TARGET_DB, SOURCE_DB):
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# -- the seeded differences ------------------------------------------------------------------


def differences(case: str, rows: int) -> dict[str, Any]:
    """Keys missing from the target, extra in it, and changed (with the column changed)."""
    if case == "none":
        missing = extra = changed = 0
    elif case == "16":
        missing, extra, changed = 5, 5, 6
    elif case == "1pct":
        total = rows // 100
        missing = extra = total * 3 // 10
        changed = total - missing - extra
    else:
        raise SystemExit(f"unknown case {case!r}: choose among {', '.join(CASES)}")
    chooser = random.Random(f"{case}-{rows}")
    present = [key_of(k) for k in chooser.sample(range(1, rows + 1), missing + changed)]
    gaps = key_of(rows) // 100
    if extra > gaps:
        raise SystemExit(f"--rows {rows} is too small for case {case}")
    absent = [100 * g for g in chooser.sample(range(1, gaps + 1), extra)]
    changes: dict[str, list[int]] = {name: [] for name in COLUMNS}
    for n, key in enumerate(present[missing:]):
        changes[COLUMNS[n % len(COLUMNS)]].append(key)
    return {
        "missing": sorted(present[:missing]),
        "extra": sorted(absent),
        "changed": changes,
    }


def seeded_keys(seeded: dict[str, Any]) -> dict[str, set[int]]:
    changed = {key for keys in seeded["changed"].values() for key in keys}
    return {"missing": set(seeded["missing"]), "extra": set(seeded["extra"]), "changed": changed}


def apply(server: str, seeded: dict[str, Any]) -> None:
    expressions = ", ".join(ROW[name] for name in COLUMNS)
    with psycopg.connect(database_url(server, TARGET_DB)) as conn:
        conn.execute(f"DELETE FROM {TABLE} WHERE {KEY} = ANY(%s)", (seeded["missing"],))
        conn.execute(
            f"INSERT INTO {TABLE} SELECT id, {expressions} FROM unnest(%s::integer[]) AS id",
            (seeded["extra"],),
        )
        for name, keys in seeded["changed"].items():
            conn.execute(
                f"UPDATE {TABLE} SET {name} = {CHANGE[name]} WHERE {KEY} = ANY(%s)", (keys,)
            )
    vacuum(server, TARGET_DB)


def undo(server: str, seeded: dict[str, Any]) -> None:
    expressions = ", ".join(ROW[name] for name in COLUMNS)
    changed = sorted(seeded_keys(seeded)["changed"])
    with psycopg.connect(database_url(server, TARGET_DB)) as conn:
        conn.execute(f"DELETE FROM {TABLE} WHERE {KEY} = ANY(%s)", (seeded["extra"],))
        conn.execute(
            f"INSERT INTO {TABLE} SELECT id, {expressions} FROM unnest(%s::integer[]) AS id",
            (seeded["missing"],),
        )
        conn.execute(
            f"UPDATE {TABLE} SET ({', '.join(COLUMNS)}) = ({expressions}) WHERE {KEY} = ANY(%s)",
            (changed,),
        )
    vacuum(server, TARGET_DB)


def vacuum(server: str, database: str) -> None:
    with psycopg.connect(database_url(server, database), autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {TABLE}")


# -- CPU of the server -----------------------------------------------------------------------


class ServerCpu:
    """CPU seconds of the PostgreSQL processes that ended (and were reaped by the postmaster)
    since the last reading: the postmaster's children times."""

    def __init__(self, server: str) -> None:
        self.path: Path | None = None
        try:
            with psycopg.connect(server) as conn:
                folder = conn.execute("SHOW data_directory").fetchone()[0]
            pid = Path(folder, "postmaster.pid").read_text().split()[0]
            self.path = Path(f"/proc/{pid}/stat")
            self.read()
        except (OSError, IndexError, psycopg.Error):
            self.path = None

    def read(self) -> float | None:
        if self.path is None:
            return None
        fields = self.path.read_text().rsplit(")", 1)[1].split()
        # fields[0] is the state (the 3rd field of stat); cutime and cstime are the 16th, 17th.
        return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


# -- the anchor ------------------------------------------------------------------------------


def hash_table(server: str, database: str) -> tuple[int, int]:
    with psycopg.connect(database_url(server, database)) as conn:
        count, total = conn.execute(HASH_SQL).fetchone()
    return count, int(total)


def hashscan(server: str, parallel: bool, server_cpu: ServerCpu | None = None) -> dict[str, Any]:
    cpu_before = None if server_cpu is None else server_cpu.read()
    began = time.perf_counter()
    if parallel:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            source, target = pool.map(lambda name: hash_table(server, name), (SOURCE_DB, TARGET_DB))
    else:
        source, target = (hash_table(server, name) for name in (SOURCE_DB, TARGET_DB))
    figures = {"seconds": time.perf_counter() - began, "differ": source != target}
    if cpu_before is not None:
        time.sleep(0.05)  # the backends exit right after their clients
        figures["server_cpu_s"] = round(server_cpu.read() - cpu_before, 2)
    return figures


# -- the tools -------------------------------------------------------------------------------


def timed_process(argv: list[str], server_cpu: ServerCpu, env: dict[str, str] | None = None):
    cpu_before = server_cpu.read()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(argv, check=False, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    server = None
    if cpu_before is not None:
        time.sleep(0.05)  # the backends exit right after their clients
        server = server_cpu.read() - cpu_before
    figures = {"seconds": seconds, "client_cpu_s": round(client, 2)}
    figures["server_cpu_s"] = None if server is None else round(server, 2)
    return done, figures


def cutover_command() -> str:
    local = Path(sys.executable).parent / "cutover"
    return str(local) if local.exists() else "cutover"


def run_cutover(
    server: str, server_cpu: ServerCpu, folder: str, source: str | None = None
) -> dict[str, Any]:
    """The command line; with ``source``, importing cutover from that folder instead."""
    report_path = Path(folder, "report.json")
    report_path.unlink(missing_ok=True)
    argv = [cutover_command(), "audit"]
    argv += [
        "--source",
        database_url(server, SOURCE_DB),
        "--target",
        database_url(server, TARGET_DB),
    ]
    argv += ["--table", TABLE, "--key", KEY, "--columns", ",".join(COLUMNS)]
    argv += ["--json", str(report_path)]
    env = None if source is None else {**os.environ, "PYTHONPATH": source}
    done, figures = timed_process(argv, server_cpu, env)
    if done.returncode != 0 or not report_path.exists():
        figures["error"] = f"exit status {done.returncode}: {(done.stderr or done.stdout)[-2000:]}"
        return figures
    report = json.loads(report_path.read_text())
    found: dict[str, set[int] | None] = {kind: set() for kind in ("missing", "extra", "changed")}
    for diff in report.get("diffs", []):
        if diff["kind"] in found:
            found[diff["kind"]].add(diff["key"][0])
    figures["counts"] = report["counts"]
    figures["truncated"] = report.get("truncated")
    figures["report_duration_s"] = report.get("duration_s")
    figures["keys"] = found
    return figures


def reladiff_command() -> Path:
    """reladiff in its own virtual environment, created on first use."""
    binary = RELADIFF_VENV / "bin" / "reladiff"
    if not binary.exists():
        print(f"creating {RELADIFF_VENV} with {RELADIFF_REQUIREMENT}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(RELADIFF_VENV)], check=True)
        pip = [str(RELADIFF_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, RELADIFF_REQUIREMENT], check=True)
    return binary


def reladiff_version() -> str:
    done = subprocess.run(
        [str(reladiff_command()), "--version"], check=False, capture_output=True, text=True
    )
    return done.stdout.strip().lstrip("v")


def run_reladiff(server: str, server_cpu: ServerCpu, threads: int) -> dict[str, Any]:
    argv = [str(reladiff_command())]
    argv += [database_url(server, SOURCE_DB), TABLE, database_url(server, TARGET_DB), TABLE]
    argv += ["--key-columns", KEY]
    for name in COLUMNS:
        argv += ["--columns", name]
    argv += ["--json", "--skip-sort-results", "--threads", str(threads)]
    # reladiff prints through rich, which wraps lines at the terminal's width.
    env = {**os.environ, "COLUMNS": "1000000"}
    done, figures = timed_process(argv, server_cpu, env)
    signs: dict[int, set[str]] = {}
    decoder = json.JSONDecoder()
    text, at = done.stdout, 0
    try:
        while True:
            while at < len(text) and text[at].isspace():
                at += 1
            if at >= len(text):
                break
            (sign, values), at = decoder.raw_decode(text, at)
            signs.setdefault(int(values[0]), set()).add(sign)
    except (ValueError, TypeError) as error:
        figures["error"] = f"cannot read reladiff's output at {at}: {error}"
    if done.returncode != 0 or "ERROR" in done.stderr:
        figures["error"] = f"exit status {done.returncode}: {done.stderr[-2000:]}"
    keys = {
        "missing": {key for key, seen in signs.items() if seen == {"-"}},
        "extra": {key for key, seen in signs.items() if seen == {"+"}},
        "changed": {key for key, seen in signs.items() if seen == {"-", "+"}},
    }
    figures["counts"] = {kind: len(found) for kind, found in keys.items()}
    figures["keys"] = keys
    return figures


# -- measuring -------------------------------------------------------------------------------


def judge(tool: str, case: str, figures: dict[str, Any], expected: dict[str, set[int]]) -> bool:
    """Whether a run found exactly the seeded keys; warns when not."""
    problems = []
    if "error" in figures:
        problems.append(figures["error"])
    else:
        counts = figures["counts"]
        for kind, keys in expected.items():
            if counts.get(kind) != len(keys):
                problems.append(f"{counts.get(kind)} {kind} instead of {len(keys)}")
            found = figures["keys"][kind]
            # A truncated report lists some of the differences: none may be wrong.
            wrong = found - keys if figures.get("truncated") else found ^ keys
            if wrong:
                problems.append(f"{len(wrong)} {kind} keys differ, e.g. {sorted(wrong)[:5]}")
        if counts.get("pending"):
            problems.append(f"{counts['pending']} pending")
    for problem in problems:
        warn(f"{tool}, case {case}: {problem}")
    return not problems


def summarize(runs: list[dict[str, Any]], rows: int) -> dict[str, Any]:
    seconds = [run["seconds"] for run in runs]
    median = statistics.median(seconds)
    summary = {
        "seconds": round(median, 3),
        "best_s": round(min(seconds), 3),
        "rows_per_second": round(rows / median),
        "runs_s": [round(value, 3) for value in seconds],
    }
    for field in ("client_cpu_s", "server_cpu_s", "report_duration_s"):
        values = [run[field] for run in runs if run.get(field) is not None]
        if values:
            summary[field] = round(statistics.median(values), 2)
    return summary


def measure_case(
    server: str,
    case: str,
    rows: int,
    repeat: int,
    threads: int | None,
    server_cpu: ServerCpu,
    folder: str,
    baseline: str | None = None,
) -> dict[str, Any]:
    seeded = differences(case, rows)
    expected = seeded_keys(seeded)
    apply(server, seeded)
    try:
        hashscan(server, parallel=False)  # warms the caches after the changes
        tools: dict[str, Any] = {
            "cutover": lambda: run_cutover(server, server_cpu, folder),
            "hashscan_sequential": lambda: hashscan(server, False, server_cpu),
            "hashscan_parallel": lambda: hashscan(server, True, server_cpu),
        }
        if threads is not None:
            tools["reladiff"] = lambda: run_reladiff(server, server_cpu, threads)
        if baseline is not None:
            tools["cutover_baseline"] = lambda: run_cutover(server, server_cpu, folder, baseline)
        names = list(tools)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for r in range(repeat):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                runs[name].append(tools[name]())
    finally:
        undo(server, seeded)
    if hash_table(server, SOURCE_DB) != hash_table(server, TARGET_DB):
        raise SystemExit(f"case {case}: the target still differs from the source after undoing")
    result: dict[str, Any] = {
        "seeded": {kind: len(keys) for kind, keys in expected.items()},
        "differing_keys": sum(len(keys) for keys in expected.values()),
        "changed_by_column": {name: len(keys) for name, keys in seeded["changed"].items()},
    }
    correct = True
    for name in names:
        summary = summarize(runs[name], rows)
        if name.startswith("hashscan"):
            differ = {run["differ"] for run in runs[name]}
            summary["tables_differ"] = differ == {True}
            if differ != {result["differing_keys"] > 0}:
                warn(f"{name}, case {case}: the hashes say differ={differ}")
                correct = False
        else:
            verdicts = [judge(name, case, run, expected) for run in runs[name]]
            summary["correct"] = all(verdicts)
            correct = correct and summary["correct"]
            last = runs[name][-1]
            summary["found"] = last.get("counts")
            if last.get("truncated") is not None:
                summary["report_truncated"] = last["truncated"]
            if "error" in last:
                summary["error"] = last["error"]
        result[name] = summary
    cutover = result["cutover"]["seconds"]
    ratio = {
        "cutover_over_hashscan": round(cutover / result["hashscan_sequential"]["seconds"], 2),
        "cutover_over_hashscan_parallel": round(
            cutover / result["hashscan_parallel"]["seconds"], 2
        ),
    }
    meets = ratio["cutover_over_hashscan"] <= TARGETS["cutover_over_hashscan_at_most"]
    if "reladiff" in result:
        ratio["reladiff_over_cutover"] = round(result["reladiff"]["seconds"] / cutover, 2)
        meets = (
            meets and ratio["reladiff_over_cutover"] >= TARGETS["reladiff_over_cutover_at_least"]
        )
    if "cutover_baseline" in result:
        before = result["cutover_baseline"]["seconds"]
        ratio["baseline_over_cutover"] = round(before / cutover, 2)
        ratio["baseline_over_hashscan"] = round(
            before / result["hashscan_sequential"]["seconds"], 2
        )
        if "reladiff" in result:
            ratio["reladiff_over_baseline"] = round(result["reladiff"]["seconds"] / before, 2)
    result["ratio"] = ratio
    result["meets_targets"] = meets
    result["correct"] = correct
    return result


def postgresql_settings(server: str) -> dict[str, str]:
    names = ("server_version", "shared_buffers", "work_mem", "max_parallel_workers_per_gather")
    with psycopg.connect(server) as conn:
        return {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in names}


def run(
    server: str,
    rows: int = 1_000_000,
    repeat: int = 3,
    cases: tuple[str, ...] = CASES,
    reladiff_threads: int | None = 2,
    reuse: bool = False,
    keep: bool = False,
    baseline: str | None = None,
) -> dict[str, Any]:
    """Seed (or reuse) both databases, measure every case, drop them unless kept; with
    ``baseline``, a folder holding another version's ``cutover`` package, that version too."""
    for case in cases:
        differences(case, rows)  # rejects unknown cases before anything is created
    versions: dict[str, Any] = {"postgresql": postgresql_settings(server)}
    if reladiff_threads is not None:
        versions["reladiff"] = reladiff_version()
    cutover_version = subprocess.run(
        [cutover_command(), "--version"], check=False, capture_output=True, text=True
    ).stdout.strip()
    versions["cutover_cli"] = cutover_version or None
    if reuse and reusable(server, rows):
        loading: dict[str, Any] = {"reused": True}
    else:
        loading = seed(server, rows)
    server_cpu = ServerCpu(server)
    load_before = [round(value, 2) for value in os.getloadavg()]
    results: dict[str, Any] = {}
    try:
        hashscan(server, parallel=False)  # warms the caches
        with tempfile.TemporaryDirectory() as folder:
            for case in cases:
                print(f"case {case} ...", file=sys.stderr, flush=True)
                results[case] = measure_case(
                    server, case, rows, repeat, reladiff_threads, server_cpu, folder, baseline
                )
    finally:
        if not (keep or reuse):
            drop(server)
    command = [
        "python bench/audit.py",
        f"--server={server}",
        f"--rows={rows}",
        f"--repeat={repeat}",
        f"--cases={','.join(cases)}",
    ]
    if reladiff_threads is None:
        command.append("--skip-reladiff")
    else:
        command.append(f"--reladiff-threads={reladiff_threads}")
    command += ["--reuse"] if reuse else []
    command += ["--keep"] if keep else []
    command += [f"--baseline={baseline}"] if baseline else []
    columns = [f"{name} {kind}" for name, kind in zip(COLUMNS, TYPES, strict=True)]
    return {
        "parameters": {
            "rows": rows,
            "repeat": repeat,
            "figure": "median of the runs",
            "table": f"{TABLE} ({KEY} integer primary key, {', '.join(columns)})",
            "databases": [SOURCE_DB, TARGET_DB],
            "reladiff_threads": reladiff_threads,
            "cutover_workers": "default",
            "load_average_before": load_before,
            "load_average_after": [round(value, 2) for value in os.getloadavg()],
        },
        "versions": versions,
        "load": loading,
        "targets": TARGETS,
        "cases": results,
        "correct": all(result["correct"] for result in results.values()),
        "meets_targets": all(result["meets_targets"] for result in results.values()),
        "command": " ".join(command),
        "hash_sql": HASH_SQL,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each tool; the median")
    parser.add_argument("--cases", default=",".join(CASES), help="among none,16,1pct")
    parser.add_argument("--skip-reladiff", action="store_true")
    parser.add_argument(
        "--reladiff-threads", type=int, default=2, help="reladiff's --threads (per database)"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="reuse the databases when they hold --rows rows"
    )
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    parser.add_argument(
        "--baseline",
        help="a folder with another version's cutover package (git archive REV src | tar -x):"
        " timed in the same rounds as cutover_baseline",
    )
    arguments = parser.parse_args()
    emit(
        "audit",
        run(
            arguments.server,
            arguments.rows,
            arguments.repeat,
            tuple(case for case in arguments.cases.split(",") if case),
            None if arguments.skip_reladiff else arguments.reladiff_threads,
            arguments.reuse,
            arguments.keep,
            arguments.baseline,
        ),
    )


if __name__ == "__main__":
    main()
