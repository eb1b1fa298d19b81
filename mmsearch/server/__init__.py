"""`mmsearch serve`: the HTTP retrieval backend (FastAPI). See :func:`create_app`."""

from mmsearch.server.app import create_app
from mmsearch.server.protocol import server_config

__all__ = ["create_app", "server_config"]
