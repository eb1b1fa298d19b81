"""`mmsearch serve`: the HTTP retrieval backend (FastAPI). See :func:`create_app`."""

from mmsearch.server.app import create_app

__all__ = ["create_app"]
