"""The store's tables, as SQLAlchemy Core metadata shared by SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

from cutover.telemetry.windows import COUNTERS

SCHEMA_VERSION = 7
"""1: the first release. 2: rollouts, and decisions that change no state (kind, version NULL).
3: tenant cohorts. 4: leases (who leads a role such as the rollout controller). 5: windows
count expected exceptions apart from errors. 6: noise, learned per field and declared, and
the HTTP proxy's counts per route. 7: latency buckets 64 per power of two (1.6% wide) in
``cutover_latency`` (the coarse ``cutover_histograms`` of earlier windows are still read), and
windows count the proxy's 410 answers on retired routes (``gone``) and flag exposures
(``exposures``: choose, OpenFeature, OFREP)."""

metadata = sa.MetaData()

meta = sa.Table(
    "cutover_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
)

states = sa.Table(
    "cutover_states",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("percent", sa.Float, nullable=False),
    sa.Column("sample", sa.Float, nullable=False),
    sa.Column("fallback", sa.Boolean, nullable=False),
    sa.Column("pins", sa.JSON, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
)

decisions = sa.Table(
    "cutover_decisions",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("migration", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False, server_default="set"),
    # The state version this decision wrote; NULL for a decision that changed no state.
    sa.Column("version", sa.BigInteger, nullable=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("old_state", sa.JSON, nullable=True),
    sa.Column("new_state", sa.JSON, nullable=False),
    sa.Column("evidence", sa.JSON, nullable=False),
    # One decision per accepted change: a version is written once per migration.
    sa.UniqueConstraint("migration", "version", name="cutover_decisions_one_per_version"),
)


rollouts = sa.Table(
    "cutover_rollouts",
    metadata,
    sa.Column("migration", sa.String(200), primary_key=True),
    sa.Column("plan", sa.JSON, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("step_started_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("started_by", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("approvals", sa.JSON, nullable=False),
    sa.Column("notes", sa.JSON, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=True),
)

cohorts = sa.Table(
    "cutover_cohorts",
    metadata,
    sa.Column("migration", sa.String(200), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("wave", sa.Integer, nullable=False),
    sa.Column("tenants", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("window_seconds", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("promoted_at", sa.Float, nullable=True),
    sa.Column("rolled_back_at", sa.Float, nullable=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
)


leases = sa.Table(
    "cutover_leases",
    metadata,
    sa.Column("role", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    # Grows by one with every new holding, and never goes back: a row is never deleted.
    sa.Column("term", sa.BigInteger, nullable=False),
    # Seconds since the epoch by the database's clock, never a client's.
    sa.Column("acquired_at", sa.Float, nullable=False),
    sa.Column("renewed_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)


def _window_key(*, arm: bool = True) -> list[sa.Column[object]]:
    """(migration, arm, start): where a minute of one migration's telemetry is kept."""
    columns = [sa.Column("migration", sa.String(200), primary_key=True)]
    if arm:
        columns.append(sa.Column("arm", sa.String(8), primary_key=True))
    columns.append(sa.Column("start", sa.BigInteger, primary_key=True, autoincrement=False))
    return columns


windows = sa.Table(
    "cutover_windows",
    metadata,
    *_window_key(),
    *(sa.Column(name, sa.BigInteger, nullable=False, server_default="0") for name in COUNTERS),
)

histograms = sa.Table(
    "cutover_histograms",
    metadata,
    # Buckets of 8 per power of two (histogram.COARSE_BITS), written before schema 7: read
    # with the fine ones, which they coarsen, and deleted by retention like every window.
    *_window_key(),
    sa.Column("bucket", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("count", sa.BigInteger, nullable=False),
)

latency = sa.Table(
    "cutover_latency",
    metadata,
    # Buckets of 64 per power of two (histogram.SUB_BITS), only those that counted something.
    *_window_key(),
    sa.Column("bucket", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("count", sa.BigInteger, nullable=False),
)

flushes = sa.Table(
    "cutover_flushes",
    metadata,
    sa.Column("run", sa.String(40), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("instance", sa.String(120), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
)

drift_samples = sa.Table(
    "cutover_drift_samples",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("migration", sa.String(200), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("unit", sa.String(400), nullable=True),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Index("cutover_drift_samples_by_time", "migration", "at"),
)

drift_counts = sa.Table(
    "cutover_drift_counts",
    metadata,
    *_window_key(arm=False),
    sa.Column("key", sa.String(40), primary_key=True),  # sha1 of the fingerprint
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False),
)

instances = sa.Table(
    "cutover_instances",
    metadata,
    sa.Column("instance", sa.String(120), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False),
    sa.Column("info", sa.JSON, nullable=False),
)

noise_counts = sa.Table(
    "cutover_noise_counts",
    metadata,
    # Each instance's counts since it started, replaced whole on each write: summed on reading.
    sa.Column("migration", sa.String(200), primary_key=True),
    sa.Column("instance", sa.String(120), primary_key=True),
    sa.Column("route", sa.String(400), primary_key=True),
    sa.Column("path", sa.String(1000), primary_key=True),
    sa.Column("raw", sa.BigInteger, nullable=False),
    sa.Column("noise", sa.BigInteger, nullable=False),
    sa.Column("requests", sa.BigInteger, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
)

noise_rules = sa.Table(
    "cutover_noise_rules",
    metadata,
    sa.Column("migration", sa.String(200), primary_key=True),
    sa.Column("prefix", sa.String(1000), primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("added_by", sa.String(200), nullable=False),
    sa.Column("added_at", sa.Float, nullable=False),
)

route_windows = sa.Table(
    "cutover_route_windows",
    metadata,
    # An HTTP proxy's counts per route, arm and window, as each proxy process holds them:
    # rewritten whole while the window is current (so a retry counts nothing twice), summed
    # over processes on reading.
    sa.Column("migration", sa.String(200), primary_key=True),
    sa.Column("instance", sa.String(120), primary_key=True),
    sa.Column("route", sa.String(400), primary_key=True),
    sa.Column("arm", sa.String(8), primary_key=True),
    sa.Column("start", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("calls", sa.BigInteger, nullable=False),
    sa.Column("errors", sa.BigInteger, nullable=False),
    sa.Column("timeouts", sa.BigInteger, nullable=False),
    sa.Column("fallbacks", sa.BigInteger, nullable=False),
    sa.Column("offpath", sa.BigInteger, nullable=False),
    # {"bits": 6, "buckets": [[bucket, count], ...]}; before schema 7 a bare list of coarse
    # buckets (bits 3).
    sa.Column("histogram", sa.JSON, nullable=False),
)

sa.Index("cutover_decisions_by_migration", decisions.c.migration, decisions.c.id)
sa.Index("cutover_windows_by_start", windows.c.start)
sa.Index("cutover_flushes_by_time", flushes.c.at)


STAGED_PREFIXES = {"w": windows, "l": latency, "d": drift_counts}
"""Where each prefix of a staged column is folded to: ``w_calls`` holds calls for windows."""

postgres_metadata = sa.MetaData()
"""Tables of PostgreSQL alone (arrays): created beside ``metadata`` on that dialect."""

staged = sa.Table(
    "cutover_staged",
    postgres_metadata,
    # One row per applied flush, append-only and keyless so concurrent flushes never wait on
    # one another: its windows, latency buckets and drift counts as one array per column of
    # the table they are folded into (sql.SqlStore._fold sums them there in batches). The
    # element types are the tables' own, so whatever was staged can always be folded.
    *(
        sa.Column(f"{prefix}_{column.name}", sa.ARRAY(column.type), nullable=False)
        for prefix, table in STAGED_PREFIXES.items()
        for column in table.columns
    ),
)
