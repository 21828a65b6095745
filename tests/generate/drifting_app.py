"""An application whose new arm drifts on every other call, exposing cutover's metrics.

Run as ``python -m tests.generate.drifting_app STORE_URL PORT_FILE``: it writes the port of
its /metrics endpoint to PORT_FILE and calls the migration until it is stopped.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from prometheus_client import start_http_server

import cutover


def main() -> None:
    store, port_file = sys.argv[1], Path(sys.argv[2])
    cutover.configure(store, refresh_interval=0.2, flush_interval=1)
    codec = cutover.Migration("codec", legacy=lambda x: x, new=lambda x: x + x % 2)
    server, _ = start_http_server(0, addr="127.0.0.1")
    port_file.write_text(str(server.server_port))
    number = 0
    while True:
        codec(number)
        number += 1
        time.sleep(0.01)  # about a hundred calls a second


if __name__ == "__main__":
    main()
