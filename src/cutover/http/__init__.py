"""The admin HTTP API and the live dashboard (``pip install 'cutover[server]'``).

``create_app(Settings(store=...))`` builds the FastAPI application that ``cutover serve``
runs; it holds no logic of its own beyond HTTP: every read and action calls the same library
functions as the CLI.
"""

from cutover.http._app import Settings, create_app
from cutover.http._auth import Principal, Role, Tokens, hash_token, new_token

__all__ = ["Principal", "Role", "Settings", "Tokens", "create_app", "hash_token", "new_token"]
