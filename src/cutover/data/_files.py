"""Files a data migration must not lose: written whole, then flushed to disk."""

from __future__ import annotations

import os


def replace_durably(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` with ``text`` atomically: readers see the old file or the new one,
    never a part, and the new one is on disk when this returns."""
    name = os.fspath(path)
    temporary = f"{name}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, name)
