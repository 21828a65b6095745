"""Files that must not be lost or half-written: written whole, then flushed to disk."""

from __future__ import annotations

import contextlib
import os


def replace_durably(path: str | os.PathLike[str], text: str, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``text`` atomically: readers see the old file or the new one,
    never a part, and the new one is on disk when this returns. ``mode`` (0o600, say) is set
    before any of the text is written. On failure the old file stays as it was."""
    name = os.fspath(path)
    temporary = f"{name}.tmp"
    replaced = False
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, name)
        replaced = True
    finally:
        if not replaced:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
