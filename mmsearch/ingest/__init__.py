"""The ingest pipeline: reader (walk) -> mapper (decode in workers, embed in batches) -> writer.

Incremental by (path, size, mtime, inode) and the sidecar caption's signature; a content hash lets
renamed and duplicated files reuse a stored vector. Decoding runs in worker threads while the main
thread embeds the previous batch. Bad files are reported through ``hooks.skip`` and the run goes on.
Each batch is one SQLite transaction, so an interrupted run keeps what it wrote.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmsearch.encoders.towers import Towers
from mmsearch.files import under
from mmsearch.ingest import distributed
from mmsearch.ingest.decode import Decoder, safe_opener
from mmsearch.ingest.distributed import RayOptions, WorkerSpec, embed_remote
from mmsearch.ingest.embed import embed_batch
from mmsearch.ingest.walk import Candidate, WalkResult, walk
from mmsearch.ingest.write import VectorSink, delete, write
from mmsearch.modalities import Modality, Pending, ReadJob, all_modalities, indexable
from mmsearch.modalities.image import DECODE_SIZE
from mmsearch.spaceset import SpaceSet
from mmsearch.store import KnownFile, Reusable, Store

__all__ = [
    "Candidate", "IndexOptions", "IngestHooks", "IngestReport", "Ingestor", "RayOptions", "WalkResult", "index_paths",
    "resolve_ocr", "walk",
]  # fmt: skip

# Version of what an item's vectors are: 2 added caption, file-name and OCR text vectors. An index
# at an older version re-embeds the items that own extra spaces once (their own vectors are reused by hash).
ITEM_VECTORS_VERSION = 2


@dataclass
class IndexOptions:
    """How an `index` run works; shared by the CLI, the server and :meth:`mmsearch.Engine.index`.

    Attributes:
        batch_size: Files embedded per model call.
        workers: Decoding threads (default: CPU count, at most 8).
        include_hidden: Also index hidden files and folders.
        follow_symlinks: Follow symbolic links that stay inside the folders being indexed.
        ocr: Read the text in pictures; None: what the index was built with, else on when installed.
        wait: Seconds to wait while another run writes the index.
        ray: Decode and embed on a Ray cluster (:mod:`mmsearch.ingest.distributed`); None: in this process.
    """

    batch_size: int = 32
    workers: int | None = None
    include_hidden: bool = False
    follow_symlinks: bool = False
    ocr: bool | None = None
    wait: float = 0.0
    ray: RayOptions | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IngestHooks:
    """Callbacks for progress and skipped files. Library code never prints."""

    skip: Callable[[str, str], None] = lambda path, reason: None
    start: Callable[[int], None] = lambda total: None
    advance: Callable[[int], None] = lambda n: None
    # just before the model loads, when the run was given it to load (a run with nothing to do loads none)
    load: Callable[[], None] = lambda: None


@dataclass
class IngestReport:
    """What one `index` run did."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    reused: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)
    notes: list[tuple[str, str]] = field(default_factory=list)  # indexed, with a remark (a frame cap)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "reused": self.reused,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "ignored": self.ignored,
            "notes": [{"path": p, "note": n} for p, n in self.notes],
            "seconds": round(self.seconds, 3),
        }


def index_paths(
    store: Store,
    spaces: SpaceSet,
    towers: Towers | Callable[[], Towers],
    paths: Sequence[str | os.PathLike[str]],
    options: IndexOptions,
    hooks: IngestHooks | None = None,
) -> IngestReport:
    """One `index` run: take the writer's lock, check the database, run the pipeline, save the FAISS files.

    ``towers`` may be a function that loads them: then a run that finds every file indexed and unchanged
    (and none gone) returns without loading the model, only checking each FAISS file against SQLite
    (memory-mapped) and rebuilding one that disagrees.

    Raises:
        MmsearchError: a path that does not exist.
        IndexBusyError: another run still holds the index's lock after ``options.wait`` seconds.
        StoreWriteError: the index folder cannot be written (disk full, read-only); what earlier
            batches committed stays, and the next run goes on from there.
        IndexCorruptError: the database is damaged (every page is read first).
    """
    from mmsearch import threads
    from mmsearch.errors import MmsearchError
    from mmsearch.lock import IndexLock

    if options.ray is not None:
        distributed.require()  # before the walk, and on a run that finds nothing to do too
    roots = []
    for p in paths:
        if not Path(p).expanduser().exists():
            raise MmsearchError(f"no such file or folder: {p}")
        roots.append(Path(p).expanduser().resolve())
    threads.wide()  # the encoders work in batches (a search earlier in this thread may have narrowed it)
    with IndexLock(spaces.folder, options.wait), spaces.writing():
        store.check()  # a damaged database must not pass a run as a success
        with store.snapshot():
            spaces.refresh()  # another run may have written since these indexes were loaded
        ocr = resolve_ocr(store, options.ocr)
        if not isinstance(towers, Towers):
            quiet = Ingestor(store, spaces, None, options, hooks, ocr).unchanged(roots)
            if quiet is not None:
                # no model, but every FAISS file is still checked against SQLite (memory-mapped: milliseconds)
                # and rebuilt when it disagrees: a run killed between its commit and its save, a damaged file
                for name in store.generations():
                    if store.count(name):
                        spaces.get(name, mapped=True)
                spaces.rechoose()  # a memory budget set since
                spaces.save()
                return quiet
            (hooks or IngestHooks()).load()
            towers = towers()
        for modality in indexable(towers):
            for space in modality.spaces:
                if towers.get(space.tower) is not None or store.count(space.name):
                    spaces.get(space.name)  # load (or rebuild) before the store changes under it
        try:
            report = Ingestor(store, spaces, towers, options, hooks, ocr).run(roots)
        except BaseException:
            with contextlib.suppress(MmsearchError):  # keep what failed, not a second error saving
                spaces.save()
            raise
        spaces.rechoose()
        spaces.save()
    return report


def resolve_ocr(store: Store, requested: bool | None) -> bool:
    """Whether this run reads text in pictures: as asked, else as the index was built, else whether
    RapidOCR is installed. The choice sticks to the index.

    Raises:
        MmsearchError: asked for, and RapidOCR is not installed.
    """
    from mmsearch.errors import MmsearchError
    from mmsearch.ocr import ocr_available

    recorded = store.get_meta("ocr")
    if requested is not None:
        ocr = requested
    else:
        ocr = bool(recorded) if recorded is not None else ocr_available()
    if ocr and not ocr_available():
        raise MmsearchError("reading text in pictures needs RapidOCR: pip install 'mmsearch[ocr]'")
    if recorded != ocr:
        store.set_meta(ocr=ocr)
    return ocr


class Ingestor:
    """One run of `mmsearch index` over some roots: the three stages joined by a small runner."""

    def __init__(
        self,
        store: Store,
        sink: VectorSink,
        towers: Towers | None,
        options: IndexOptions,
        hooks: IngestHooks | None = None,
        ocr: bool = False,
    ) -> None:
        """``towers`` None: only :meth:`unchanged` may be asked (it plans over every registered modality)."""
        self.store = store
        self.sink = sink
        self._towers = towers
        self.options = options
        self.batch_size = max(1, options.batch_size)
        self.workers = options.workers or min(8, (os.cpu_count() or 2))
        self.hooks = hooks or IngestHooks()
        self.report = IngestReport()
        self.ocr = ocr
        self._run_vectors: dict[tuple[str, str], Reusable] = {}
        self._stop = threading.Event()
        self.modalities = {m.name: m for m in (indexable(towers) if towers is not None else all_modalities())}

    def _skip(self, path: str, reason: str) -> None:
        self.report.skipped.append((path, reason))
        self.hooks.skip(path, reason)

    def _reusable(self, modality: str) -> Callable[[str], Reusable | None]:
        def find(content_hash: str) -> Reusable | None:
            return self._run_vectors.get((content_hash, modality)) or self.store.reusable(content_hash, modality)

        return find

    def run(self, roots: Sequence[Path]) -> IngestReport:
        t0 = time.perf_counter()
        root_strs = [str(r) for r in roots]
        # every read must stay inside these (a file given by name: its folder, where its caption lies)
        real = [os.path.realpath(r) for r in root_strs]
        real_roots = [r if os.path.isdir(r) else os.path.dirname(r) for r in real]
        others = [m for m in all_modalities() if m.name not in self.modalities]
        found = walk(
            roots,
            list(self.modalities.values()),
            self._skip,
            self.options.include_hidden,
            self.options.follow_symlinks,
            known=others,
        )
        self.report.ignored = found.ignored
        todo, replace, gone = self._plan(found, root_strs)
        self.hooks.start(len(todo))
        failed: list[int] = []
        # Decode pictures only as large as the model looks at (JPEG DCT scaling makes a 12 MP photo ~4x
        # cheaper at 1/8 than at 1/4); OCR needs more pixels to read text.
        image = self.towers.get("image")
        side = (image.image_size if image is not None else None) or DECODE_SIZE
        opener = safe_opener(self.options.follow_symlinks, real_roots)
        decode_size = DECODE_SIZE if self.ocr else min(DECODE_SIZE, max(side, 64))
        try:
            if self.options.ray is not None:
                self._process_remote(todo, replace, failed, self._spec(real_roots, decode_size))
            else:
                self._process(todo, replace, failed, opener, decode_size)
            if self._stale:
                self.store.set_meta(item_vectors=ITEM_VECTORS_VERSION)
        finally:
            # deleted files go last, so a renamed file could reuse the vector of its old name
            self.report.removed += delete(self.store, self.sink, gone + failed)
            self.report.seconds = time.perf_counter() - t0
        return self.report

    @property
    def towers(self) -> Towers:
        if self._towers is None:
            raise RuntimeError("an Ingestor made without towers can only tell whether a run has work")
        return self._towers

    def unchanged(self, roots: Sequence[Path]) -> IngestReport | None:
        """The report of a run with nothing to do, found without the model: every file the walk finds, of any
        modality, is indexed and unchanged, none has gone, no vector is out of date. None: there may be work
        (the caller loads the model and runs; whatever this walk met is reported by that run instead)."""
        t0 = time.perf_counter()
        skipped: list[tuple[str, str]] = []
        found = walk(
            roots,
            list(self.modalities.values()),
            lambda path, reason: skipped.append((path, reason)),
            self.options.include_hidden,
            self.options.follow_symlinks,
            known=[],
        )
        known = self.store.known_files()
        if not known or int(self.store.get_meta("item_vectors", 1)) < ITEM_VECTORS_VERSION:
            return None
        todo, _, gone = self._plan(found, [str(r) for r in roots], known)
        if todo or gone:
            return None
        for path, reason in skipped:
            self._skip(path, reason)
        self.hooks.start(0)
        self.report.ignored = found.ignored
        self.report.seconds = time.perf_counter() - t0
        return self.report

    def _plan(
        self, found: WalkResult, root_strs: list[str], known: dict[str, KnownFile] | None = None
    ) -> tuple[list[Candidate], dict[str, KnownFile], list[int]]:
        """What to read (new and changed files), which ids they replace, and which items left the disk."""
        if known is None:
            known = self.store.known_files()
        # an index from before extra text vectors: items that own extra spaces are embedded again (once)
        self._stale = bool(known) and int(self.store.get_meta("item_vectors", 1)) < ITEM_VECTORS_VERSION
        if not known:
            self.store.set_meta(item_vectors=ITEM_VECTORS_VERSION)
        extra_owners = {name for name, m in self.modalities.items() if any(s.text_derived for s in m.spaces)}
        todo: list[Candidate] = []
        replace: dict[str, KnownFile] = {}
        learn_inodes: dict[int, int] = {}
        for cand in found.candidates:
            k = known.get(cand.path)
            becomes = self.modalities[cand.modality].becomes
            if (
                k is not None
                and (k.modality == cand.modality or k.modality in becomes)
                and k.size == cand.size
                and k.mtime_ns == cand.mtime_ns
                and k.inode in (None, cand.inode)  # another file moved in with the same size and mtime
                and k.caption_sig == cand.caption_sig
                and not (self._stale and cand.modality in extra_owners)
            ):
                self.report.unchanged += 1
                if k.inode is None and cand.inode is not None:
                    learn_inodes[k.id] = cand.inode  # indexed before inodes were kept
                continue
            if k is not None:
                replace[cand.path] = k
            todo.append(cand)
        seen = {c.path for c in found.candidates}
        gone = [
            k.id
            for p, k in known.items()
            if p not in seen and under(p, root_strs) and not under(p, found.unreadable_dirs)
        ]
        if learn_inodes:
            self.store.set_inodes(learn_inodes)
        return todo, replace, gone

    def _process(
        self,
        todo: list[Candidate],
        replace: dict[str, KnownFile],
        failed: list[int],
        opener: Callable[[str], Any],
        decode_size: int,
    ) -> None:
        jobs = {
            name: ReadJob(self._reusable(name), opener, decode_size, self.ocr, self._stop.is_set)
            for name in self.modalities
        }
        window = max(2 * self.batch_size, 2 * self.workers)
        decoder = Decoder(self.modalities, jobs, opener, self.workers, window)
        pending: dict[str, list[Pending]] = {name: [] for name in self.modalities}
        try:
            for cand, got in decoder.run(todo):
                if not isinstance(got, Pending):
                    self._failed(cand.path, str(got), replace, failed)
                    continue
                batch = pending[cand.modality]
                batch.append(got)
                # flush when the model has a full batch, or when many reused vectors wait to be written
                modality = self.modalities[cand.modality]
                full = modality.batch or self.batch_size
                if len(batch) >= 8 * self.batch_size or sum(x.vector is None for x in batch) >= full:
                    self._flush(modality, batch, replace, failed, jobs[cand.modality])
                    batch.clear()
            for name, batch in pending.items():
                if batch:
                    self._flush(self.modalities[name], batch, replace, failed, jobs[name])
                    batch.clear()
        finally:
            self._stop.set()

    def _spec(self, roots: Sequence[str], decode_size: int) -> WorkerSpec:
        from mmsearch.encoders.towers import SOUND, record

        towers = self.towers
        assert self.options.ray is not None
        return WorkerSpec(
            model=towers.name,
            sound=towers.get(SOUND) is not None,
            recorded=record(towers),
            roles=tuple(sorted(towers.roles)),
            roots=tuple(roots),
            follow_symlinks=self.options.follow_symlinks,
            decode_size=decode_size,
            ocr=self.ocr,
            threads=max(1, round(self.options.ray.cpus_per_actor)),
        )

    def _process_remote(
        self, todo: list[Candidate], replace: dict[str, KnownFile], failed: list[int], spec: WorkerSpec
    ) -> None:
        """The mapper on Ray; this process writes what comes back, batched per modality as a local run."""
        assert self.options.ray is not None
        pending: dict[str, list[Pending]] = {}
        for cand, got in embed_remote(todo, spec, self.options.ray, self.batch_size):
            if not isinstance(got, Pending):
                self._failed(cand.path, got, replace, failed)
                continue
            batch = pending.setdefault(cand.modality, [])
            batch.append(got)
            if len(batch) >= (self.modalities[cand.modality].batch or self.batch_size):
                self._commit(batch, replace, failed)
                batch.clear()
        for batch in pending.values():
            if batch:
                self._commit(batch, replace, failed)

    def _failed(self, path: str, reason: str, replace: dict[str, KnownFile], failed: list[int]) -> None:
        self._skip(path, reason)
        if path in replace:
            failed.append(replace[path].id)
        self.hooks.advance(1)

    def _flush(
        self, modality: Modality, batch: list[Pending], replace: dict[str, KnownFile], failed: list[int], job: ReadJob
    ) -> None:
        embed_batch(modality, batch, self.towers, job)
        self._commit(batch, replace, failed)

    def _commit(self, batch: list[Pending], replace: dict[str, KnownFile], failed: list[int]) -> None:
        """Write an embedded batch (items the embed step could not embed are skipped)."""
        kept = []
        for x in batch:
            if x.error is not None:
                self._failed(x.path, x.error, replace, failed)
            else:
                kept.append(x)
                if x.fresh and x.vector is not None:
                    self._run_vectors[(x.content_hash, x.modality)] = Reusable(x.vector, x.attrs, x.segments, x.extras)
                if x.note:
                    self.report.notes.append((x.path, x.note))
        if not kept:
            return
        self.report.reused += sum(not x.fresh for x in kept)
        added, updated = write(self.store, self.sink, kept, replace)
        self.report.added += added
        self.report.updated += updated
        self.hooks.advance(len(kept))
