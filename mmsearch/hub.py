"""The Hugging Face Hub, as model loading meets it: is a file cached, can the hub be reached now, and
keeping the libraries' retry logs off the user's terminal.

A model that must be downloaded is only tried when the hub answers a connect within a second; offline,
a model whose weights are not cached is a one-line error at once, instead of a minute of retries.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Sequence
from urllib.parse import urlsplit

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 1.0
NOISY_LOGGERS = ("", "huggingface_hub", "urllib3", "open_clip", "transformers", "filelock")  # "": the root logger


def endpoint() -> str:
    """The hub this process downloads from (``HF_ENDPOINT``, as huggingface_hub reads it)."""
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def offline() -> bool:
    """Whether the user said so (``HF_HUB_OFFLINE=1``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the hub accepts a TCP connection within ``timeout`` seconds (no request is sent)."""
    if offline():
        return False
    parts = urlsplit(endpoint())
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return True
    except (OSError, UnicodeError):
        return False


def cached(repo: str, filenames: Sequence[str]) -> str | None:
    """The local path of the first of ``filenames`` of ``repo`` in the Hugging Face cache, if any."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for name in filenames:
        found = try_to_load_from_cache(repo.strip("/"), name)
        if isinstance(found, str):
            return found
    return None


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Keep the libraries' warnings (retries, deprecations) off the terminal while a model loads: what
    goes wrong reaches the user as one error line from us."""
    saved = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
