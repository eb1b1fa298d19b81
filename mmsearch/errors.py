"""Typed exceptions. Library code raises these; only the CLI prints them."""

from __future__ import annotations


class MmsearchError(Exception):
    """Base class of every error mmsearch raises on purpose."""


class ModelError(MmsearchError):
    """A model name cannot be parsed, loaded, or does not support a modality."""


class ModelMismatchError(ModelError):
    """The index was built with another model than the one asked for or loaded."""


class IndexNotFoundError(MmsearchError):
    """No index exists at the given location."""


class IndexCorruptError(MmsearchError):
    """The index files exist but cannot be read."""


class SchemaError(MmsearchError):
    """The index was written by a newer mmsearch, or a migration failed."""


class QueryError(MmsearchError):
    """A query is malformed: nothing to search for, unknown target, unreadable query file."""


class MediaError(MmsearchError):
    """A file cannot be decoded. Ingest turns this into a skip, never a stopped run."""


# The skip reason of a file whose size or mtime moved while it was read (a copy still in progress).
CHANGED_WHILE_READ = "changed while being read (still being written?): indexed on the next run"


class IndexBusyError(MmsearchError):
    """Another process is writing the index (`mmsearch index` holds its lock)."""


class StoreWriteError(MmsearchError):
    """The index folder cannot be written (disk full, read-only, permissions). What was committed stays."""
