"""An application that counts calls in process pools; tests run it as ``python -m tests.pool_app``.

Its migration is declared at import, as applications do, so that spawned workers (which import
the main module) declare it too; or, with ``POOL_APP_DECLARE=first-call``, on each process's
first call, after its pool has started it. Nothing here flushes in the workers: their exit must.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import sys

import cutover

LATE = os.environ.get("POOL_APP_DECLARE") == "first-call"

codec = None if LATE else cutover.Migration("pooled", abs, abs)


def work(number: int) -> int:
    global codec
    if codec is None:
        codec = cutover.Migration("pooled", abs, abs)
    return codec(-number)


def main(method: str, kind: str, calls: int) -> None:
    context = multiprocessing.get_context(method)
    for number in range(100):
        work(number)
    if kind == "pool":
        with context.Pool(2) as pool:  # leaving the block calls terminate(): SIGTERM
            pool.map(work, range(calls), chunksize=100)
    else:
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as executor:
            list(executor.map(work, range(calls), chunksize=100))
    assert cutover.flush()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
