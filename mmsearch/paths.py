"""Where indexes live: `--index DIR`, else `$MMSEARCH_INDEX`, else the platform data dir."""

from __future__ import annotations

import os
from pathlib import Path

ENV_INDEX = "MMSEARCH_INDEX"


def default_index_dir() -> Path:
    """The index used when none is given: `$MMSEARCH_INDEX` or `<user data dir>/mmsearch/default`."""
    env = os.environ.get(ENV_INDEX)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_path

    return user_data_path("mmsearch", appauthor=False) / "default"


def resolve_index_dir(index: str | os.PathLike[str] | None) -> Path:
    """The absolute index directory for an optional user-supplied value."""
    path = Path(index).expanduser() if index else default_index_dir()
    return path.resolve()
