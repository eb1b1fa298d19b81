"""The Python API: ``Engine`` opens an index directory, indexes folders and answers queries."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsearch.encoders import AUDIO, DEFAULT_MODEL, IMAGE, TEXT, Encoder, canonical_name, l2_normalize, load_encoder
from mmsearch.errors import (
    IndexNotFoundError,
    MmsearchError,
    ModelError,
    ModelMismatchError,
)
from mmsearch.fusion import (
    DEDUPE_SIMILARITY,
    REFERENCE_TEXTS,
    Calibration,
    Query,
    QueryPart,
    Scored,
    embed_parts,
    extra_kind,
    first_kind,
    fuse,
)
from mmsearch.ingest import IngestHooks, Ingestor, IngestReport, extra_spaces, indexable_modalities
from mmsearch.media import load_image
from mmsearch.paths import resolve_index_dir
from mmsearch.query import Hit, item_metadata, resolve_targets
from mmsearch.store import SCHEMA_VERSION, Store
from mmsearch.vector_index import Recipe, VectorIndex, choose_recipe, load_recipes

if TYPE_CHECKING:
    from PIL import Image


@dataclass
class IndexInfo:
    """What `mmsearch info` shows."""

    path: str
    model: str | None
    dim: int | None
    fingerprint: str | None
    schema_version: int
    counts: dict[str, int]
    recipes: dict[str, str]
    size_bytes: int
    created: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# While an index run writes, FAISS files are saved at least this often (seconds), so that queries
# in other processes load them instead of rebuilding from SQLite.
SAVE_EVERY_S = 30.0
MAX_EMBED_CHARS = 100_000  # one text to embed (models read a few hundred tokens of it)


class Engine:
    """An index directory: SQLite metadata, one FAISS index per modality, and its model.

    Example:
        >>> with Engine.open("~/photos-index", model="openclip:ViT-B-32/openai") as eng:
        ...     eng.index(["~/Pictures"])
        ...     hits = eng.search(text="a dog on a beach", k=5)
    """

    def __init__(self, index_dir: Path, model: str | None = None, recipe: str | None = None) -> None:
        self.dir = index_dir
        self.store = Store(index_dir / Store.FILENAME)
        model = canonical_name(model) if model else None
        self._requested_model = model
        self._encoder: Encoder | None = None
        self._spaces: dict[str, VectorIndex] = {}
        self._dirty: set[str] = set()
        self._gen: dict[str, int] = {}  # the store generation each loaded FAISS index reflects
        self._writing = False
        self._present_cache: tuple[tuple[tuple[str, int], ...], set[str]] | None = None
        self._last_save = time.monotonic()
        self._samples: dict[str, tuple[tuple[str, int], np.ndarray]] = {}
        self._reference: np.ndarray | None = None
        self._recipes = load_recipes()
        if recipe is not None and recipe not in self._recipes:
            self.store.close()
            raise MmsearchError(f"unknown recipe {recipe!r}; known: {', '.join(sorted(self._recipes))}")
        if recipe is not None and recipe != self.store.get_meta("recipe"):
            self.store.set_meta(recipe=recipe)  # a forced recipe sticks to the index
        self._forced_recipe: str | None = recipe or self.store.get_meta("recipe")
        recorded = self.store.get_meta("model")
        if recorded and model and model != recorded:
            self.store.close()
            raise ModelMismatchError(
                f"index {index_dir} was built with model {recorded!r}, not {model!r}: "
                f"omit --model to use it, or re-index into another --index to use {model!r}"
            )

    # -- lifecycle ----------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        index: str | os.PathLike[str] | None = None,
        model: str | None = None,
        *,
        create: bool = False,
        recipe: str | None = None,
    ) -> Engine:
        """Open the index at ``index`` (default: ``$MMSEARCH_INDEX`` or the user data dir).

        Args:
            index: Index directory.
            model: Model name for a new index; for an existing one it must match what it was built with.
            create: Create the directory when missing (indexing does; querying does not).
            recipe: Force a FAISS recipe from ``indexes/`` instead of choosing by size.

        Raises:
            IndexNotFoundError: no index there and ``create`` is false.
            ModelMismatchError: ``model`` differs from the one the index was built with.
        """
        index_dir = resolve_index_dir(index)
        db = index_dir / Store.FILENAME
        if not db.exists():
            if not create:
                raise IndexNotFoundError(f"no index at {index_dir}: run `mmsearch index FOLDER` first")
            index_dir.mkdir(parents=True, exist_ok=True)
        engine = cls(index_dir, model=model, recipe=recipe)
        if not create and engine.store.get_meta("model") is None:
            engine.store.close()
            raise IndexNotFoundError(f"index {index_dir} is empty: run `mmsearch index FOLDER` first")
        return engine

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Save pending FAISS changes and release the database."""
        try:
            self.save()
        finally:
            self.store.close()

    # -- model --------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.store.get_meta("model") or self._requested_model or DEFAULT_MODEL

    @property
    def encoder(self) -> Encoder:
        """The index's encoder, loaded on first use and checked against what the index recorded."""
        if self._encoder is None:
            enc = load_encoder(self.model_name)
            recorded = self.store.get_meta("model")
            if recorded is None:
                self.store.set_meta(
                    model=self.model_name,
                    dim=enc.dim,
                    fingerprint=enc.fingerprint,
                    modalities=sorted(enc.modalities),
                    created=time.time(),
                )
            else:
                dim, fp = self.store.get_meta("dim"), self.store.get_meta("fingerprint")
                if dim != enc.dim or fp != enc.fingerprint:
                    raise ModelMismatchError(
                        f"model {recorded!r} now loads different weights (dim {enc.dim}, fingerprint "
                        f"{enc.fingerprint}) than the index was built with (dim {dim}, fingerprint {fp}): "
                        "re-index into a new --index"
                    )
            self._encoder = enc
        return self._encoder

    # -- vector indexes (the ingest VectorSink) ----------------------------------------------
    def _recipe_for(self, n: int) -> Recipe:
        if self._forced_recipe:
            return self._recipes[self._forced_recipe]
        return choose_recipe(n, self._recipes)

    def _space(self, space: str) -> VectorIndex:
        vi = self._spaces.get(space)
        if vi is not None:
            return vi
        path = self.dir / f"{space}.faiss"
        with self.store.snapshot():  # the generation and the vectors of one committed state
            gen = self.store.generation(space)
            if path.exists():
                try:
                    vi, saved_gen = VectorIndex.load(path, self._recipes, space)
                    if saved_gen != gen or not self._agrees(space, vi):
                        vi = None
                except MmsearchError:
                    vi = None
            if vi is None:
                vi = self._rebuild(space)
                self._dirty.add(space)
        self._spaces[space] = vi
        self._gen[space] = gen
        return vi

    def _agrees(self, space: str, vi: VectorIndex) -> bool:
        """Whether a loaded FAISS file holds what SQLite holds: dimension, count, and 8 vectors spread over
        the ids, each found as itself (a file copied from another space, or zeroed, fails this)."""
        if vi.dim != self._dim() or vi.ntotal != self.store.count(space):
            return False
        span = self.store.id_range(space)
        if span is None:
            return vi.ntotal == 0
        probes = np.linspace(span[0], span[1], num=8).astype(np.int64)
        return vi.holds(self.store.vectors_near_ids(space, probes.tolist()))

    def _refresh(self) -> dict[str, int]:
        """Drop loaded FAISS indexes that another process's commits made stale (call in a snapshot).

        Returns every space's generation in this snapshot.
        """
        gens = self.store.generations()
        for space in list(self._spaces):
            if self._gen.get(space) != gens.get(space, 0):
                del self._spaces[space]
                self._dirty.discard(space)
        return gens

    def _present(self, gens: dict[str, int]) -> set[str]:
        """The spaces holding vectors. ``SELECT DISTINCT`` scans every vector row (~30 ms at 1M), so the
        answer is kept until a generation changes: the set cannot change without one."""
        key = tuple(sorted(gens.items()))
        if self._present_cache is None or self._present_cache[0] != key:
            self._present_cache = (key, set(self.store.spaces()))
        return self._present_cache[1]

    def _dim(self) -> int:
        dim = self.store.get_meta("dim")
        return int(dim) if dim is not None else self.encoder.dim

    def _rebuild(self, space: str) -> VectorIndex:
        """Build the FAISS index of ``space`` from the vectors in SQLite."""
        ids = self.store.ids(space)
        n = len(ids)
        recipe = self._recipe_for(n)
        if recipe.is_ivf and n < recipe.nlist(n):
            recipe = self._recipes["flat"]  # too few vectors to train cells (a forced recipe on tiny data)
        train = None
        if recipe.is_ivf:
            want = min(n, recipe.nlist(n) * int(recipe.params.get("train_per_list", 64)))
            rng = np.random.default_rng(0)
            keep = set(rng.choice(ids, size=want, replace=False).tolist())
            train = np.concatenate([v[np.isin(i, list(keep))] for i, v in self.store.iter_vectors(space)])
        return VectorIndex.build(self._dim(), recipe, self.store.iter_vectors(space), n, train)

    def add(self, space: str, ids: Sequence[int], vectors: np.ndarray) -> None:
        self._space(space).add(np.asarray(ids, dtype=np.int64), vectors)
        self._changed(space)

    def remove(self, space: str, ids: Sequence[int]) -> None:
        self._space(space).remove(ids)
        self._changed(space)

    def _changed(self, space: str) -> None:
        # Only the lock holder writes, so the index now reflects the store's latest commit.
        self._gen[space] = self.store.generation(space)
        self._dirty.add(space)
        if time.monotonic() - self._last_save > SAVE_EVERY_S:
            self.save()  # queries running meanwhile load this instead of rebuilding from SQLite

    def save(self) -> None:
        """Write changed FAISS indexes (atomically); switch recipe when the size crossed a threshold.

        Outside an index run (a query rebuilt a stale file) this is best-effort: the files are written
        aside first, then, under the short save lock taken without waiting, put in place only if they
        still reflect the latest commit; a reader never touches the writer's lock, so an `index` starting
        meanwhile is never refused. A folder that cannot be written (a read-only index) is left alone.

        Raises:
            StoreWriteError: an index run could not write a file (disk full, read-only folder).
        """
        if not self._dirty:
            return
        self._last_save = time.monotonic()
        from mmsearch.lock import SaveLock

        pending = []
        try:
            for space in sorted(self._dirty):
                vi = self._spaces[space]
                if vi.recipe.name != self._recipe_for(vi.ntotal).name:
                    with self.store.snapshot():
                        rebuilt = self._rebuild(space)
                    if rebuilt.recipe.name != vi.recipe.name:
                        vi = self._spaces[space] = rebuilt
                pending.append((space, vi.write_temp(self.dir / f"{space}.faiss", self._gen[space], space)))
            with SaveLock(self.dir, blocking=self._writing):
                for space, p in pending:
                    if self._writing or self._gen.get(space) == self.store.generation(space):
                        p.commit()
                    else:
                        p.discard()  # another process committed since: its run saves the newer file
                    self._dirty.discard(space)
        except MmsearchError:
            for _, p in pending:
                p.discard()
            if self._writing:
                raise
            self._dirty.clear()

    def vector_ids(self, space: str) -> np.ndarray:
        """Every id in the FAISS index of ``space`` (for consistency checks)."""
        return self._space(space).ids()

    # -- indexing -----------------------------------------------------------------------------
    def index(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        batch_size: int = 32,
        workers: int | None = None,
        include_hidden: bool = False,
        follow_symlinks: bool = False,
        hooks: IngestHooks | None = None,
        ocr: bool | None = None,
        wait: float = 0.0,
    ) -> IngestReport:
        """Index (or re-index incrementally) files and folders. Interrupting keeps committed work.

        Args:
            ocr: Read the text in pictures (RapidOCR). Default: what this index was built with, else on
                when ``rapidocr-onnxruntime`` is installed. The choice sticks to the index.
            wait: Seconds to wait for another run writing this index (see :mod:`mmsearch.lock`).

        Raises:
            IndexBusyError: another run still holds the index's lock after ``wait`` seconds.
            StoreWriteError: the index folder cannot be written (disk full, read-only); what earlier
                batches committed stays, and the next run goes on from there.
        """
        from mmsearch.lock import IndexLock

        with IndexLock(self.dir, wait):
            self._writing = True
            try:
                self.store.check()  # a damaged database must not pass a run as a success
                with self.store.snapshot():
                    self._refresh()  # another run may have written since this engine loaded its indexes
                return self._index(paths, batch_size, workers, include_hidden, follow_symlinks, hooks, ocr)
            finally:
                self._writing = False

    def _index(
        self,
        paths: Sequence[str | os.PathLike[str]],
        batch_size: int,
        workers: int | None,
        include_hidden: bool,
        follow_symlinks: bool,
        hooks: IngestHooks | None,
        ocr: bool | None,
    ) -> IngestReport:
        from mmsearch.ocr import ocr_available

        recorded = self.store.get_meta("ocr")
        if ocr is None:
            ocr = bool(recorded) if recorded is not None else ocr_available()
        if ocr and not ocr_available():
            raise MmsearchError("reading text in pictures needs RapidOCR: pip install 'mmsearch[ocr]'")
        if recorded != ocr:
            self.store.set_meta(ocr=ocr)
        roots = []
        for p in paths:
            root = Path(p).expanduser()
            if not root.exists():
                raise MmsearchError(f"no such file or folder: {p}")
            roots.append(root.resolve())
        for modality in indexable_modalities(self.encoder):
            for space in (modality, *extra_spaces(modality)):
                self._space(space)  # load (or rebuild) before the store changes under it
        ingestor = Ingestor(
            self.store,
            self,
            self.encoder,
            batch_size=batch_size,
            workers=workers,
            include_hidden=include_hidden,
            follow_symlinks=follow_symlinks,
            hooks=hooks,
            ocr=ocr,
        )
        try:
            report = ingestor.run(roots)
        except BaseException:
            with contextlib.suppress(MmsearchError):  # keep what failed, not a second error saving
                self.save()
            raise
        self.save()
        return report

    # -- search -------------------------------------------------------------------------------
    def search(
        self,
        text: str | Query | None = None,
        image: str | os.PathLike[str] | Image.Image | None = None,
        target: str | None = None,
        k: int = 10,
        audio: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> list[Hit]:
        """Rank indexed items for a query.

        Args:
            text: A :class:`Query`, or query text in the query grammar (``"cat + sunset - water"``,
                ``"2:dog + 0.5:beach"``; see ``mmsearch.querylang``).
            image: A query image (path or PIL image), added as a part.
            target: ``image``, ``text``, ``audio`` or ``any``; default: the kind of an image or audio
                query, else images (text for text-only models).
            k: Number of results.
            audio: A query sound (path), added as a part.
            **options: Other :class:`Query` fields: ``offset``, ``fusion``, ``path``, ``after``,
                ``before``, ``min_score``, ``dedupe``, ``explain``, ``parts``.

        Audio hits carry ``duration`` and ``match`` (the segment that matches best: its start and end
        in seconds, and for speech its words) in their metadata. With ``explain``, every hit carries
        each part's and each vector's contribution.
        """
        if isinstance(text, Query):
            query = text
        else:
            parts = list(options.pop("parts", []))
            if image is not None:
                parts.append(QueryPart(IMAGE, image))
            if audio is not None:
                parts.append(QueryPart(AUDIO, audio))
            query = Query.parse(text, parts=parts, target=target, k=k, **options)
        return self.run_query(query)

    def run_query(self, query: Query) -> list[Hit]:
        """Run a :class:`Query` (see :mod:`mmsearch.fusion` for how scores are fused).

        The query sees one committed state of the index, even while an index run writes: the SQLite
        reads share one read transaction, and FAISS indexes older than it are reloaded first.
        """
        query.validate()
        with self.store.snapshot():
            return self._run_query(query, self._refresh())

    def _run_query(self, query: Query, gens: dict[str, int]) -> list[Hit]:
        encoder = self.encoder
        qvecs = embed_parts(encoder, query.parts)
        present = self._present(gens)
        targets = [m for m in resolve_targets(query.target, encoder, first_kind(query)) if m in present]
        spaces_for = {m: [m, *(s for s in extra_spaces(m) if s in present)] for m in targets}
        allowed = self._allowed_ids(query, targets)
        if allowed is not None and allowed.size == 0:
            return []
        want = query.offset + query.k
        fetch = max(50, 4 * want)
        samples = {s: self._sample(s, gens) for spaces in spaces_for.values() for s in spaces}
        calibration = Calibration(samples, self._text_population(present, gens))
        while True:
            cands: set[int] = set()
            for pi, part in enumerate(query.parts):
                if part.negative:
                    continue
                for spaces in spaces_for.values():
                    for space in spaces:
                        if extra_kind(space) and part.kind != TEXT:
                            continue
                        _, ids = self._space(space).search(qvecs[pi : pi + 1], fetch, allowed)
                        cands.update(int(i) for i in ids[0] if i >= 0)
            ranked = self._score(query, qvecs, sorted(cands), spaces_for, calibration)
            exhausted = all(fetch >= self._space(s).ntotal for spaces in spaces_for.values() for s in spaces)
            if len(ranked) >= want or exhausted:
                break
            fetch *= 4
        items = self.store.get_items([r.id for r in ranked[query.offset : want]])
        probe = l2_normalize(qvecs[[i for i, p in enumerate(query.parts) if not p.negative]].sum(axis=0)[None])[0]
        hits: list[Hit] = []
        for r in ranked[query.offset : want]:
            item = items[r.id]
            meta = item_metadata(item)
            if item.modality == AUDIO:
                meta.update(self._where(r.id, probe))
            hits.append(Hit(r.id, query.offset + len(hits) + 1, r.score, item.path, item.modality, meta, r.explain))
        return hits

    def _score(
        self,
        query: Query,
        qvecs: np.ndarray,
        cands: list[int],
        spaces_for: dict[str, list[str]],
        calibration: Calibration,
    ) -> list[Scored]:
        """Fuse, then apply min-score and de-duplication."""
        if not cands:
            return []
        modality_of = self.store.modalities_of(cands)
        cands = [c for c in cands if c in modality_of]
        all_spaces = sorted({s for spaces in spaces_for.values() for s in spaces})
        vectors = self.store.vectors_of(cands, all_spaces)
        ranked = fuse(query, qvecs, cands, modality_of, vectors, spaces_for, calibration)
        if query.min_score is not None:
            ranked = [r for r in ranked if r.score >= query.min_score]
        if query.dedupe:
            hashes = self.store.hashes_of(cands)
            kept: list[Scored] = []
            seen_hash: set[str] = set()
            kept_vecs: dict[str, list[np.ndarray]] = {}
            for r in ranked:
                m = modality_of[r.id]
                own = vectors.get((r.id, m))
                if hashes.get(r.id) in seen_hash:
                    continue
                if own is not None and any(float(own @ v) >= DEDUPE_SIMILARITY for v in kept_vecs.get(m, [])):
                    continue
                kept.append(r)
                seen_hash.add(hashes.get(r.id, ""))
                if own is not None:
                    kept_vecs.setdefault(m, []).append(own)
            ranked = kept
        return ranked

    def _allowed_ids(self, query: Query, targets: list[str]) -> np.ndarray | None:
        """Ids passing the path and date filters (None: no filter), so FAISS returns only those."""
        if query.path is None and query.after is None and query.before is None:
            return None
        return self.store.filter_ids(targets, query.path, query.after, query.before)

    def _text_population(self, present: set[str], gens: dict[str, int]) -> np.ndarray:
        """Samples of every text-derived space in the index, plus the reference phrases."""
        if TEXT not in self.encoder.modalities:
            return np.zeros((0, self._dim()), dtype=np.float32)
        if self._reference is None:
            self._reference = self.encoder.encode_text(list(REFERENCE_TEXTS))
        parts = [self._reference]
        parts += [self._sample(s, gens) for s in sorted(present) if s == TEXT or extra_kind(s)]
        return np.concatenate([p for p in parts if len(p)])

    def _sample(self, space: str, gens: dict[str, int]) -> np.ndarray:
        key = (space, gens.get(space, 0))
        cached = self._samples.get(space)
        if cached is None or cached[0] != key:
            cached = (key, self.store.sample_vectors(space))
            self._samples[space] = cached
        return cached[1]

    def _where(self, item_id: int, query: np.ndarray) -> dict[str, Any]:
        """Where in an audio item a query matches best: its best segment's time span and words."""
        from mmsearch.audio_analysis import best_segment

        found = best_segment(self.store.segments(item_id), query)
        if found is None:
            return {}
        seg, score = found
        match: dict[str, Any] = {"start": round(seg.start, 2), "end": round(seg.end, 2), "kind": seg.kind}
        if seg.text:
            match["text"] = seg.text
        match["score"] = round(score, 6)
        return {"match": match}

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts into the index's space: float32 ``[n, dim]``, L2-normalised."""
        from mmsearch.querylang import check_text

        if TEXT not in self.encoder.modalities:
            raise ModelError(f"model {self.model_name} cannot embed text")
        for t in texts:
            check_text(t, "text", MAX_EMBED_CHARS)
        return self.encoder.encode_text(list(texts))

    def embed_audio(self, paths: Sequence[str | os.PathLike[str]]) -> np.ndarray:
        """Embed audio files into the index's space (speech through the text tower, sound through the sound tower)."""
        from mmsearch.audio_analysis import analyze, can_index_audio

        if not can_index_audio(self.encoder):
            raise ModelError(f"model {self.model_name} cannot embed audio")
        if not paths:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        from mmsearch.query import MAX_QUERY_AUDIO_SECONDS

        return np.stack([analyze(p, self.encoder, max_seconds=MAX_QUERY_AUDIO_SECONDS).vector for p in paths])

    def embed_image(self, images: Sequence[str | os.PathLike[str] | Image.Image]) -> np.ndarray:
        """Embed images (paths or PIL images) into the index's space."""
        if IMAGE not in self.encoder.modalities:
            raise ModelError(f"model {self.model_name} cannot embed images")
        pics = [load_image(Path(i)) if isinstance(i, (str, os.PathLike)) else i.convert("RGB") for i in images]
        return self.encoder.encode_image(pics)

    # -- info ---------------------------------------------------------------------------------
    def info(self, check: bool = False) -> IndexInfo:
        """What the index holds.

        Args:
            check: First read every page of the database (SQLite's quick_check, ~0.6 s per GB), so a
                damaged one is an error rather than a partial answer. `mmsearch info` does.

        Raises:
            IndexCorruptError: the database is damaged.
        """
        if check:
            self.store.check()
        size = sum(f.stat().st_size for f in self.dir.iterdir() if f.is_file())
        from mmsearch.vector_index import read_sidecar

        recipes = {}
        for space in self.store.spaces():
            meta = read_sidecar(self.dir / f"{space}.faiss")
            recipes[space] = meta["recipe"] if meta and meta["space"] == space else "(rebuilt on next use)"
        return IndexInfo(
            path=str(self.dir),
            model=self.store.get_meta("model"),
            dim=self.store.get_meta("dim"),
            fingerprint=self.store.get_meta("fingerprint"),
            schema_version=int(self.store.get_meta("schema_version", SCHEMA_VERSION)),
            counts=self.store.counts(),
            recipes=recipes,
            size_bytes=size,
            created=self.store.get_meta("created"),
        )
