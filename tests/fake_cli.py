"""`mmsearch` with the tests' deterministic `fake` model registered, for tests that need a real process
(kill it, interrupt it): ``python tests/fake_cli.py index DIR --model fake --index IDX``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import FakeEncoder  # noqa: E402

from mmsearch import encoders  # noqa: E402
from mmsearch.cli import app  # noqa: E402

_fake = FakeEncoder()
encoders.register("fake", lambda spec: _fake)

if __name__ == "__main__":
    app()
