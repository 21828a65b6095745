"""Run every benchmark and print one JSON document (the figures in docs/performance.md).

make bench            # or: python bench/run.py
"""

from __future__ import annotations

import contextlib
import io
import json

import canary_million
import overhead
import shadow_latency
from _harness import machine


def main() -> None:
    results = {}
    for name, module, arguments in (
        ("overhead", overhead, (300_000,)),
        ("shadow_latency", shadow_latency, (5000,)),
        ("canary_million", canary_million, (1_000_000, 4)),
    ):
        with contextlib.redirect_stdout(io.StringIO()):
            results[name] = module.run(*arguments)
    print(json.dumps({"machine": machine(), **results}, indent=2))


if __name__ == "__main__":
    main()
