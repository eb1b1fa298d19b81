"""Walk folders, decide what changed, decode and embed in batches, write SQLite + FAISS.

Incremental by (path, size, mtime) and the sidecar caption's signature; a content hash lets
renamed and duplicated files reuse a stored vector. Decoding runs in worker threads while the
main thread encodes the previous batch. Bad files are reported through ``hooks.skip`` and the
run goes on. Each batch is one SQLite transaction, so an interrupted run keeps what it wrote.
"""

from __future__ import annotations

import contextlib
import os
import queue
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mmsearch import files
from mmsearch.audio import audio_exts, probe
from mmsearch.audio_analysis import can_index_audio
from mmsearch.encoders import AUDIO, IMAGE, TEXT, Encoder
from mmsearch.errors import CHANGED_WHILE_READ, MediaError
from mmsearch.files import clamp_int64, file_version, hash_stream, prefix_hash, printable_path, under
from mmsearch.media import (
    DECODE_SIZE,
    MAX_IMAGE_BYTES,
    MAX_TEXT_BYTES,
    TEXT_EXTS,
    check_image,
    decode_image,
    decode_text,
    excerpt,
    image_exts,
    name_words,
)
from mmsearch.store import ItemRecord, Store
from mmsearch.store.db import KnownFile, Reusable, SegmentRecord

# Version of what an item's vectors are: 2 added caption, file-name and OCR text vectors. An index
# at an older version re-embeds its images and sounds once (their own vectors are reused by hash).
ITEM_VECTORS_VERSION = 2


def extra_spaces(modality: str) -> tuple[str, ...]:
    """The extra text spaces an item of ``modality`` can own (see store.models.Vector)."""
    if modality == IMAGE:
        return (f"{IMAGE}.caption", f"{IMAGE}.name", f"{IMAGE}.ocr")
    if modality == AUDIO:
        return (f"{AUDIO}.caption", f"{AUDIO}.name")
    return ()


def indexable_modalities(encoder: Encoder) -> frozenset[str]:
    """What a model can index: its own modalities, plus audio through speech when it reads text."""
    return encoder.modalities | ({AUDIO} if can_index_audio(encoder) else frozenset())


class VectorSink(Protocol):
    """Where committed vectors go (the engine's FAISS indexes)."""

    def add(self, space: str, ids: Sequence[int], vectors: np.ndarray) -> None: ...

    def remove(self, space: str, ids: Sequence[int]) -> None: ...


@dataclass
class IngestHooks:
    """Callbacks for progress and skipped files. Library code never prints."""

    skip: Callable[[str, str], None] = lambda path, reason: None
    start: Callable[[int], None] = lambda total: None
    advance: Callable[[int], None] = lambda n: None


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
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class Candidate:
    path: str
    modality: str
    size: int
    mtime_ns: int  # clamped to 64 bits (files.file_version)
    caption_path: str | None = None
    caption_sig: str | None = None
    inode: int | None = None


def _sig(st: os.stat_result) -> str:
    size, mtime_ns = file_version(st)
    return f"{size}:{mtime_ns}"


_printable = printable_path


@dataclass
class WalkResult:
    candidates: list[Candidate] = field(default_factory=list)
    unreadable_dirs: list[str] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)


def walk(
    roots: Iterable[Path],
    modalities: frozenset[str],
    skip: Callable[[str, str], None],
    include_hidden: bool = False,
    follow_symlinks: bool = False,
) -> WalkResult:
    """Find indexable files under ``roots`` (folders or single files).

    Hidden files and folders are left out unless ``include_hidden``; symlinks are not followed
    unless ``follow_symlinks``, and then every folder is entered once (no loops). A text file
    named like an image (``a.jpg`` + ``a.txt`` or ``a.jpg.txt``) is that image's caption.
    """
    result = WalkResult()
    img_exts = image_exts()
    snd_exts = audio_exts()
    visited: set[tuple[int, int]] = set()

    def classify(name: str) -> str | None:
        ext = os.path.splitext(name)[1].lower()
        if ext in img_exts:
            return IMAGE
        if ext in TEXT_EXTS:
            return TEXT
        if ext in snd_exts:
            return AUDIO
        return None

    def handle_dir_files(files: list[tuple[str, os.stat_result]]) -> None:
        names = {os.path.basename(p): (p, st) for p, st in files}
        images = {n for n in names if classify(n) in (IMAGE, AUDIO)}  # media that can own a caption file
        captions: dict[str, tuple[str, os.stat_result]] = {}
        for n in names:
            if classify(n) != TEXT or not n.lower().endswith(".txt"):
                continue
            stem = n[:-4]
            owner = (
                stem if stem in images else next((i for i in sorted(images) if os.path.splitext(i)[0] == stem), None)
            )
            if owner is not None and (owner not in captions or stem == owner):
                captions[owner] = names[n]
        caption_files = {p for p, _ in captions.values()}
        for n, (path, st) in names.items():
            modality = classify(n)
            if modality is None or path in caption_files:
                continue
            if modality not in modalities:
                result.ignored[modality] = result.ignored.get(modality, 0) + 1
                continue
            cap = captions.get(n)
            size, mtime_ns = file_version(st)
            result.candidates.append(
                Candidate(
                    path,
                    modality,
                    size,
                    mtime_ns,
                    cap[0] if cap else None,
                    _sig(cap[1]) if cap else None,
                    clamp_int64(st.st_ino),
                )
            )

    def classify_or_dir(entry: os.DirEntry[str]) -> bool:
        return classify(entry.name) is not None or entry.is_dir(follow_symlinks=True)

    def valid_name(path: str) -> bool:
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            skip(_printable(path), "file name is not valid UTF-8")
            return False
        return True

    real_roots = [os.path.realpath(str(r)) for r in roots]

    def outside(entry: os.DirEntry[str]) -> bool:
        """A followed link whose target is not inside an indexed root (``notes.txt -> /etc/passwd``)."""
        if not entry.is_symlink():
            return False
        real = os.path.realpath(entry.path)
        if under(real, real_roots):
            return False
        skip(_printable(entry.path), f"symbolic link leads outside the indexed folders (to {_printable(real)})")
        return True

    stack: list[str] = []
    for root in roots:
        root_s = str(root)
        try:
            st = os.stat(root_s)
        except OSError as e:
            skip(root_s, f"cannot read: {e.strerror or e}")
            continue
        if stat.S_ISDIR(st.st_mode):
            stack.append(root_s)
        elif stat.S_ISREG(st.st_mode):
            # a single file: look at it beside its possible caption files, keep only it
            siblings = [(root_s, st)]
            for sib in (root_s + ".txt", os.path.splitext(root_s)[0] + ".txt"):
                with contextlib.suppress(OSError):
                    siblings.append((sib, os.stat(sib)))
            before = len(result.candidates)
            handle_dir_files(siblings)
            result.candidates[before:] = [c for c in result.candidates[before:] if c.path == root_s]

    while stack:
        folder = stack.pop()
        try:
            dst = os.stat(folder)
            key = (dst.st_dev, dst.st_ino)
            if key in visited:
                continue
            visited.add(key)
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            result.unreadable_dirs.append(folder)
            skip(_printable(folder), f"cannot read folder: {e.strerror or e}")
            continue
        files: list[tuple[str, os.stat_result]] = []
        for entry in entries:
            if not include_hidden and entry.name.startswith("."):
                continue
            try:
                if entry.is_symlink() and not follow_symlinks:
                    continue
                if follow_symlinks and classify_or_dir(entry) and outside(entry):
                    continue
                if entry.is_dir(follow_symlinks=follow_symlinks):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=follow_symlinks):
                    if classify(entry.name) is not None and valid_name(entry.path):
                        files.append((entry.path, entry.stat(follow_symlinks=follow_symlinks)))
                elif entry.is_symlink() and classify(entry.name) is not None:
                    skip(_printable(entry.path), "broken symbolic link")
            except OSError as e:
                skip(_printable(entry.path), f"cannot read: {e.strerror or e}")
        handle_dir_files(files)
    return result


@dataclass
class _Loaded:
    cand: Candidate
    size: int
    mtime_ns: int
    content_hash: str
    payload: Any = None  # PIL image, text or audio path to encode; None when the vector is reused
    vector: np.ndarray | None = None
    width: int | None = None
    height: int | None = None
    excerpt: str | None = None
    caption: str | None = None
    duration: float | None = None
    segments: Sequence[SegmentRecord] = ()
    fresh: bool = False  # embedded in this run (not reused)
    ocr_text: str | None = None
    taken_at: float | None = None
    inode: int | None = None


_under = under


class _Workers:
    """Decode threads that never keep the process alive.

    A ``ThreadPoolExecutor``'s threads are joined at interpreter exit, so one worker stuck in a read
    (a network share that stopped answering) would keep a Ctrl-C'd run from ending. These are daemon
    threads: an interrupted run cancels what has not started and leaves without waiting.
    """

    def __init__(self, n: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(n)]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        self._jobs.put((fut, fn, args))
        return fut

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fut, fn, args = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as e:  # handed to whoever waits on the future
                fut.set_exception(e)

    def shutdown(self, wait: bool) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        if wait:
            for t in self._threads:
                t.join()


class Ingestor:
    """One run of `mmsearch index` over some roots."""

    def __init__(
        self,
        store: Store,
        sink: VectorSink,
        encoder: Encoder,
        *,
        batch_size: int = 32,
        workers: int | None = None,
        include_hidden: bool = False,
        follow_symlinks: bool = False,
        hooks: IngestHooks | None = None,
        ocr: bool = False,
    ) -> None:
        self.store = store
        self.ocr = ocr
        self.sink = sink
        self.encoder = encoder
        self.batch_size = max(1, batch_size)
        self.workers = workers or min(8, (os.cpu_count() or 2))
        self.include_hidden = include_hidden
        self.follow_symlinks = follow_symlinks
        self.hooks = hooks or IngestHooks()
        self.report = IngestReport()
        self._run_vectors: dict[tuple[str, str], Reusable] = {}
        self._real_roots: list[str] | None = None
        self._stop = threading.Event()
        # Decode pictures only as large as the model looks at (JPEG DCT scaling makes a 12 MP photo
        # ~4x cheaper at 1/8 than at 1/4); OCR needs more pixels to read text.
        model_side = int(getattr(encoder, "image_size", DECODE_SIZE))
        self.decode_size = DECODE_SIZE if ocr else min(DECODE_SIZE, max(model_side, 64))

    def _skip(self, path: str, reason: str) -> None:
        self.report.skipped.append((path, reason))
        self.hooks.skip(path, reason)

    # -- per-file work in worker threads -----------------------------------------------------
    def _open(self, path: str) -> Any:
        """A file of the tree, opened so that no swap since the walk can make the read block or leave it."""
        return files.open_regular(path, follow_symlinks=self.follow_symlinks, roots=self._real_roots)

    def _load(self, cand: Candidate) -> _Loaded:
        if self._stop.is_set():
            raise MediaError("interrupted")
        if cand.modality == AUDIO:
            return self._load_audio(cand)
        with self._open(cand.path) as f:
            before = os.fstat(f.fileno())
            size = before.st_size
            if cand.modality == IMAGE:
                if size > MAX_IMAGE_BYTES:
                    raise MediaError(f"too large for a picture ({size >> 20} MiB, limit {MAX_IMAGE_BYTES >> 20} MiB)")
                if size == 0:
                    raise MediaError("empty file")
                check_image(f)  # by its header: not a picture, or too many pixels, is refused before hashing
                h, read = hash_stream(f, size)
                data = b""
            else:
                data = f.read(MAX_TEXT_BYTES)  # a note is embedded by its first MiB: the rest is never read
                h, read = prefix_hash(data, size), size
            st = os.fstat(f.fileno())
            if file_version(before) != file_version(st) or read != st.st_size:
                raise MediaError(CHANGED_WHILE_READ)
            item = _Loaded(cand, size, file_version(st)[1], h, inode=clamp_int64(st.st_ino))
            self._read_caption(item)
            reused = self._run_vectors.get((h, cand.modality)) or self.store.vector_for_hash(h, cand.modality)
            if cand.modality == IMAGE:
                if reused is None:
                    f.seek(0)
                    decoded = decode_image(f, size=self.decode_size)
                    item.payload, item.width, item.height = decoded.image, decoded.width, decoded.height
                    item.taken_at = decoded.taken_at
                else:  # same bytes, so the same upright size, date and text as when they were decoded
                    item.width, item.height = reused.width, reused.height
                    item.taken_at, item.ocr_text = reused.taken_at, reused.ocr_text
                if self.ocr and item.ocr_text is None:
                    from mmsearch.ocr import read_text

                    f.seek(0)
                    picture = item.payload if item.payload is not None else decode_image(f).image
                    item.ocr_text = read_text(picture)
                if file_version(os.fstat(f.fileno())) != file_version(st):
                    raise MediaError(CHANGED_WHILE_READ)
            else:
                text = decode_text(data)
                item.excerpt = excerpt(text)
                if reused is None:
                    item.payload = text
        item.vector = None if reused is None else reused.vector
        return item

    def _read_caption(self, item: _Loaded) -> None:
        if item.cand.caption_path:
            try:
                with self._open(item.cand.caption_path) as f:
                    item.caption = decode_text(f.read(MAX_TEXT_BYTES))
            except (OSError, MediaError):
                item.caption = None

    def _load_audio(self, cand: Candidate) -> _Loaded:
        """Hash in chunks (recordings can be GBs) and check the header; the analysis runs in _flush."""
        with self._open(cand.path) as f:
            before = os.fstat(f.fileno())
            h, size = hash_stream(f, before.st_size)
            st = os.fstat(f.fileno())
            if file_version(before) != file_version(st) or size != st.st_size:
                raise MediaError(CHANGED_WHILE_READ)
            if size == 0:
                raise MediaError("empty file")
            item = _Loaded(cand, size, file_version(st)[1], h, inode=clamp_int64(st.st_ino))
            self._read_caption(item)
            reused = self.store.vector_for_hash(h, AUDIO)
            if reused is not None:
                item.vector, item.duration, item.excerpt = reused.vector, reused.duration, reused.excerpt
                item.segments = reused.segments
            else:
                probe(f)  # unreadable files fail here, in a worker, not in the main thread
                item.payload = cand.path
        return item

    # -- main thread --------------------------------------------------------------------------
    def run(self, roots: Sequence[Path]) -> IngestReport:
        t0 = time.perf_counter()
        root_strs = [str(r) for r in roots]
        # every read must stay inside these (a file given by name: its folder, where its caption lies)
        real = [os.path.realpath(r) for r in root_strs]
        self._real_roots = [r if os.path.isdir(r) else os.path.dirname(r) for r in real]
        found = walk(roots, indexable_modalities(self.encoder), self._skip, self.include_hidden, self.follow_symlinks)
        self.report.ignored = found.ignored
        known = self.store.known_files()
        # an index from before extra text vectors: images and sounds are embedded again (once)
        stale = bool(known) and int(self.store.get_meta("item_vectors", 1)) < ITEM_VECTORS_VERSION
        if not known:
            self.store.set_meta(item_vectors=ITEM_VECTORS_VERSION)
        seen = {c.path for c in found.candidates}
        todo: list[Candidate] = []
        replace: dict[str, KnownFile] = {}
        learn_inodes: dict[int, int] = {}
        for cand in found.candidates:
            k = known.get(cand.path)
            if (
                k is not None
                and k.modality == cand.modality
                and k.size == cand.size
                and k.mtime_ns == cand.mtime_ns
                and k.inode in (None, cand.inode)  # another file moved in with the same size and mtime
                and k.caption_sig == cand.caption_sig
                and not (stale and cand.modality in (IMAGE, AUDIO))
            ):
                self.report.unchanged += 1
                if k.inode is None and cand.inode is not None:
                    learn_inodes[k.id] = cand.inode  # indexed before inodes were kept
                continue
            if k is not None:
                replace[cand.path] = k
            todo.append(cand)
        gone = [
            k.id
            for p, k in known.items()
            if p not in seen and _under(p, root_strs) and not _under(p, found.unreadable_dirs)
        ]
        if learn_inodes:
            self.store.set_inodes(learn_inodes)
        self.hooks.start(len(todo))
        failed: list[int] = []
        try:
            self._process(todo, replace, failed)
            if stale:
                self.store.set_meta(item_vectors=ITEM_VECTORS_VERSION)
        finally:
            # deleted files go last, so a renamed file could reuse the vector of its old name
            self._delete(gone + failed)
            self.report.seconds = time.perf_counter() - t0
        return self.report

    def _delete(self, ids: list[int]) -> None:
        if not ids:
            return
        for space, removed in self.store.delete_items(ids).items():
            self.sink.remove(space, removed)
        self.report.removed += len(ids)

    def _process(self, todo: list[Candidate], replace: dict[str, KnownFile], failed: list[int]) -> None:
        pending: dict[str, list[_Loaded]] = {IMAGE: [], TEXT: [], AUDIO: []}
        window = max(2 * self.batch_size, 2 * self.workers)
        pool = _Workers(self.workers, "mmsearch-decode")
        inflight: deque[tuple[Candidate, Future[_Loaded]]] = deque()
        it: Iterator[Candidate] = iter(todo)
        finished = False
        try:
            while True:
                while len(inflight) < window:
                    cand = next(it, None)
                    if cand is None:
                        break
                    inflight.append((cand, pool.submit(self._load, cand)))
                if not inflight:
                    break
                cand, fut = inflight.popleft()
                try:
                    loaded = fut.result()
                except MediaError as e:
                    self._skip(cand.path, str(e))
                    if cand.path in replace:
                        failed.append(replace[cand.path].id)
                    self.hooks.advance(1)
                    continue
                batch = pending[cand.modality]
                batch.append(loaded)
                # flush when the model has a full batch, or when many reused vectors wait to be written;
                # each audio file to analyse is its own batch (one may be hours long)
                full = self.batch_size if cand.modality != AUDIO else 1
                if len(batch) >= 8 * self.batch_size or sum(x.vector is None for x in batch) >= full:
                    self._flush(batch, replace, failed)
                    batch.clear()
            for batch in pending.values():
                if batch:
                    self._flush(batch, replace, failed)
                    batch.clear()
            finished = True
        finally:
            # interrupted (Ctrl-C, a write error): what has not started never will, and a worker stuck in a
            # read does not hold the run; the batches committed so far stay
            self._stop.set()
            for _, f in inflight:
                f.cancel()
            pool.shutdown(wait=finished)

    def _extra_vectors(self, batch: list[_Loaded]) -> list[dict[str, np.ndarray]]:
        """Text vectors an image or sound owns besides its own: caption, file-name words, OCR text."""
        out: list[dict[str, np.ndarray]] = [{} for _ in batch]
        if TEXT not in self.encoder.modalities:
            return out
        wanted: list[tuple[int, str, str]] = []
        for i, x in enumerate(batch):
            mod = x.cand.modality
            if mod not in (IMAGE, AUDIO):
                continue
            texts = {f"{mod}.caption": x.caption, f"{mod}.name": name_words(x.cand.path)}
            if mod == IMAGE:
                texts[f"{mod}.ocr"] = x.ocr_text
            wanted += [(i, space, text) for space, text in texts.items() if text and text.strip()]
        if wanted:
            vecs = self.encoder.encode_text([t for _, _, t in wanted])
            for (i, space, _), v in zip(wanted, vecs, strict=True):
                out[i][space] = v
        return out

    def _analyze_audio(self, batch: list[_Loaded], replace: dict[str, KnownFile], failed: list[int]) -> list[_Loaded]:
        """Embed the audio files that need it; the ones that fail are skipped. Returns what is left."""
        from mmsearch.audio_analysis import analyze
        from mmsearch.media import excerpt as make_excerpt

        kept = []
        for x in batch:
            if x.vector is None:
                try:
                    with self._open(x.cand.path) as f:  # the file hashed in the worker, still unchanged
                        st = os.fstat(f.fileno())
                        if file_version(st) != (x.size, x.mtime_ns) or clamp_int64(st.st_ino) != x.inode:
                            raise MediaError(CHANGED_WHILE_READ)
                        result = analyze(f, self.encoder)
                        if file_version(os.fstat(f.fileno())) != (x.size, x.mtime_ns):
                            raise MediaError(CHANGED_WHILE_READ)
                except MediaError as e:
                    self._skip(x.cand.path, str(e))
                    if x.cand.path in replace:
                        failed.append(replace[x.cand.path].id)
                    self.hooks.advance(1)
                    continue
                x.vector, x.duration, x.payload, x.fresh = result.vector, result.duration, None, True
                x.excerpt = make_excerpt(result.transcript) if result.transcript else None
                x.segments = [SegmentRecord(s.start, s.end, s.kind, s.vector, s.text) for s in result.segments]
            kept.append(x)
        return kept

    def _flush(self, batch: list[_Loaded], replace: dict[str, KnownFile], failed: list[int]) -> None:
        if batch and batch[0].cand.modality == AUDIO:
            batch = self._analyze_audio(batch, replace, failed)
            if not batch:
                return
        need = [x for x in batch if x.vector is None]
        if need:
            modality = need[0].cand.modality
            payloads = [x.payload for x in need]
            vecs = self.encoder.encode_image(payloads) if modality == IMAGE else self.encoder.encode_text(payloads)
            for x, v in zip(need, vecs, strict=True):
                x.vector, x.fresh = v, True
                x.payload = None
                self._run_vectors[(x.content_hash, modality)] = Reusable(
                    v, x.width, x.height, ocr_text=x.ocr_text, taken_at=x.taken_at
                )
        extras = self._extra_vectors(batch)
        self.report.reused += sum(not x.fresh for x in batch)
        records = [
            ItemRecord(
                path=x.cand.path,
                modality=x.cand.modality,
                size=x.size,
                mtime_ns=x.mtime_ns,
                content_hash=x.content_hash,
                inode=x.inode,
                vector=x.vector,  # type: ignore[arg-type]
                width=x.width,
                height=x.height,
                excerpt=x.excerpt,
                caption=x.caption,
                caption_path=x.cand.caption_path,
                caption_sig=x.cand.caption_sig,
                duration=x.duration,
                segments=x.segments,
                extra_vectors=extra,
                ocr_text=x.ocr_text,
                taken_at=x.taken_at,
            )
            for x, extra in zip(batch, extras, strict=True)
        ]
        replace_ids = {r.path: replace[r.path].id for r in records if r.path in replace}
        old_spaces = self.store.spaces_of(list(replace_ids.values()))
        ids = self.store.write_batch(records, replace_ids)
        for path, item_id in replace_ids.items():
            # every space the item may be in: what SQLite had, and all of its modality's (no-ops if absent)
            modality = replace[path].modality
            for space in {*old_spaces.get(item_id, []), modality, *extra_spaces(modality)}:
                self.sink.remove(space, [item_id])
        by_space: dict[str, tuple[list[int], list[np.ndarray]]] = {}
        for rec, item_id in zip(records, ids, strict=True):
            for space, vec in [(rec.modality, rec.vector), *rec.extra_vectors.items()]:
                bucket = by_space.setdefault(space, ([], []))
                bucket[0].append(item_id)
                bucket[1].append(vec)
        for space, (sids, svecs) in by_space.items():
            self.sink.add(space, sids, np.stack(svecs))
        self.report.updated += len(replace_ids)
        self.report.added += len(records) - len(replace_ids)
        self.hooks.advance(len(records))
