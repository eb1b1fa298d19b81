"""``python -m mmsearch.cli``: the same as the ``mmsearch`` command."""

from mmsearch.cli import app

app(prog_name="mmsearch")
