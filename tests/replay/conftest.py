"""The proxy tests' real upstreams (a uvicorn legacy, a Node new) and proxy, for replay."""

from ..proxy.conftest import legacy, new, start_proxy

__all__ = ["legacy", "new", "start_proxy"]
