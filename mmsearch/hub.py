"""The Hugging Face Hub, as model loading meets it: is a file cached, can the hub be reached now, and
keeping the libraries' retry logs off the user's terminal.

A model that must be downloaded is only tried when the hub answers a connect within a second; offline,
a model whose weights are not cached is a one-line error at once, instead of a minute of retries.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 0.9  # per step (connect, answer): the default's choice stays under 2 s
NOISY_LOGGERS = ("", "huggingface_hub", "urllib3", "open_clip", "transformers", "filelock")  # "": the root logger


def endpoint() -> str:
    """The hub this process downloads from (``HF_ENDPOINT``, as huggingface_hub reads it)."""
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def offline() -> bool:
    """Whether the user said so (``HF_HUB_OFFLINE=1``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


# A file every reachable hub answers for with its own headers (here: the default model's config)
PROBE_PATH = "/timm/MobileCLIP2-S0-OpenCLIP/resolve/main/open_clip_config.json"
HUB_HEADERS = ("x-repo-commit", "x-error-code")  # a hub's answers carry one; a proxy's or a portal's do not


def reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the hub answers one HEAD request as a hub does (its own headers), each step within
    ``timeout`` seconds. A TCP connect alone is not enough: proxies and portals accept any connection."""
    import http.client

    if offline():
        return False
    parts = urlsplit(endpoint())
    conn_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    try:
        conn = conn_type(parts.hostname or "", parts.port, timeout=timeout)
        try:
            conn.request("HEAD", parts.path.rstrip("/") + PROBE_PATH, headers={"User-Agent": "mmsearch"})
            response = conn.getresponse()
            return any(response.getheader(h) is not None for h in HUB_HEADERS)
        finally:
            conn.close()
    except (OSError, http.client.HTTPException, UnicodeError, ValueError):
        return False


def cache_dir() -> str:
    """The hub cache as the environment names it now (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def cached(repo: str, filenames: Sequence[str]) -> str | None:
    """The local path of the first of ``filenames`` of ``repo``'s main revision in the Hugging Face cache, if
    any. Read from the cache's documented layout (``models--ORG--NAME/refs/main`` names the snapshot) rather
    than through huggingface_hub, whose import (~0.1 s) a cold query would pay."""
    root = Path(cache_dir()) / ("models--" + repo.strip("/").replace("/", "--"))
    try:
        revision = (root / "refs" / "main").read_text().strip()
    except (OSError, UnicodeError):
        return None
    if not revision or "/" in revision or revision.startswith("."):
        return None
    for name in filenames:
        path = root / "snapshots" / revision / name
        if path.is_file():
            return str(path)
    return None


def downloaded_bytes() -> int:
    """Bytes in the hub cache's model blobs, partial downloads (``*.incomplete``) included: what a progress
    display polls while a model loads (huggingface_hub's own bars are kept off the terminal)."""
    total = 0
    root = cache_dir()
    with contextlib.suppress(OSError):
        for repo in os.scandir(root):
            if not repo.name.startswith("models--"):
                continue
            with contextlib.suppress(OSError):
                for blob in os.scandir(os.path.join(repo.path, "blobs")):
                    with contextlib.suppress(OSError):
                        total += blob.stat(follow_symlinks=False).st_size
    return total


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """``HF_HUB_OFFLINE=1`` while models load from local files (libraries that read it at call time then
    never ask the hub), restored after: a process that loads builtin can still download a model later."""
    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved


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
