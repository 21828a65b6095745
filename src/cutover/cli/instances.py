"""``cutover instances``: the app processes reporting to this store, and their health."""

from __future__ import annotations

from rich.table import Table

from cutover.cli._app import Session, cli, console, json_option, pass_session, print_json, when
from cutover.durations import format_duration
from cutover.operations import is_live


@cli.command()
@json_option
@pass_session
def instances(session: Session, as_json: bool) -> None:
    """Every app process that reported recently: state age, store errors, buffered telemetry."""
    now = session.now()
    rows = []
    for instance in session.store.instances():
        info = instance.info
        loaded = info.get("states_loaded_at")
        rows.append(
            {
                "instance": instance.instance,
                "host": instance.host,
                "pid": instance.pid,
                "live": is_live(instance, now),
                "last_seen": instance.last_seen,
                "started_at": instance.started_at,
                "state_age_seconds": None if loaded is None else max(0.0, now - float(loaded)),
                "listening": bool(info.get("listening")),
                "store_errors": int(info.get("store_errors") or 0),
                "dropped_windows": int(info.get("dropped_windows") or 0),
                "dropped_samples": int(info.get("dropped_samples") or 0),
                "rejected_flushes": int(info.get("rejected_flushes") or 0),
                "overrides": sorted(info.get("overrides") or {}),
                "migrations": info.get("versions") or {},
                "cutover": info.get("cutover"),
            }
        )
    if as_json:
        print_json({"instances": rows})
        return
    if not rows:
        console.print("No instance has reported to this store yet.")
        return
    table = Table(title="cutover instances", title_justify="left")
    for column in (
        "instance",
        "last seen",
        "state age",
        "notify",
        "store errors",
        "dropped windows",
        "refused flushes",
        "overrides",
        "migrations",
    ):
        table.add_column(column)
    for row in rows:
        age = row["state_age_seconds"]
        table.add_row(
            row["instance"] + ("" if row["live"] else " (silent)"),
            when(row["last_seen"]),
            "-" if age is None else format_duration(max(1, round(age))),
            "yes" if row["listening"] else "no",
            str(row["store_errors"]),
            str(row["dropped_windows"]),
            str(row["rejected_flushes"]),
            ", ".join(row["overrides"]) or "-",
            ", ".join(f"{name} v{version}" for name, version in sorted(row["migrations"].items())),
        )
    console.print(table)
