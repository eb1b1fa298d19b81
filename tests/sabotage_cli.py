"""`mmsearch` with the fake model and a saboteur between the walk and the reads, for tests that need a real
process (a read that would hang, a run to interrupt):

    MMSEARCH_TEST_SWAP='[{"path": "/lib/a.jpg", "to": "fifo"}]' python tests/sabotage_cli.py index /lib ...

``to``: ``fifo`` (the file becomes a named pipe), ``symlink:TARGET`` (a link to TARGET), or ``block`` (reading
it blocks forever, as a network share that stopped answering does). The swaps happen right after the walk
found the files, which is when a stranger with write access to the folder would make them.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import fake_cli  # noqa: E402,F401 - registers the fake model

import mmsearch.files  # noqa: E402
import mmsearch.ingest  # noqa: E402
from mmsearch.cli import app  # noqa: E402

SWAPS = json.loads(os.environ.get("MMSEARCH_TEST_SWAP", "[]"))
_real_walk = mmsearch.ingest.walk
_real_open = mmsearch.files.open_regular
_blocked = {s["path"] for s in SWAPS if s["to"] == "block"}


def _walk_then_swap(*args, **kwargs):
    found = _real_walk(*args, **kwargs)
    for s in SWAPS:
        path, to = s["path"], s["to"]
        if to == "block":
            continue
        os.unlink(path)
        if to == "fifo":
            os.mkfifo(path)
        elif to.startswith("symlink:"):
            os.symlink(to.split(":", 1)[1], path)
    print("SWAPPED", flush=True)
    return found


def _open(path, *args, **kwargs):
    if str(path) in _blocked:
        print("BLOCKED", flush=True)
        threading.Event().wait()  # forever
    return _real_open(path, *args, **kwargs)


mmsearch.ingest.walk = _walk_then_swap
mmsearch.files.open_regular = _open

if __name__ == "__main__":
    app()
