"""The Python API: ``Engine`` opens an index directory, indexes folders and answers queries.

A thin façade: the store (:mod:`mmsearch.store`), the FAISS indexes (:class:`~mmsearch.spaceset.SpaceSet`),
the ingest pipeline (:mod:`mmsearch.ingest`) and the search pipeline (:mod:`mmsearch.search`) do the work.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmsearch import threads
from mmsearch.encoders import DEFAULT_MODEL, Encoder, canonical_name, load_towers
from mmsearch.encoders.towers import Towers, check_recorded, record, recorded_dim
from mmsearch.errors import IndexNotFoundError, MmsearchError, ModelError, ModelMismatchError, StoreWriteError
from mmsearch.ingest import IndexOptions, IngestHooks, IngestReport, index_paths
from mmsearch.modalities import get, space
from mmsearch.paths import resolve_index_dir
from mmsearch.search import Hit, Query, QueryPart, Searcher
from mmsearch.spaceset import SpaceSet
from mmsearch.store import SCHEMA_VERSION, IndexInfo, Item, Store
from mmsearch.vector_index import load_recipes, read_sidecar


class Engine:
    """An index directory: SQLite metadata, one FAISS index per space, and its model.

    Example:
        >>> with Engine.open("~/photos-index", model="openclip:ViT-B-32/openai") as eng:
        ...     eng.index(["~/Pictures"])
        ...     hits = eng.search(text="a dog on a beach", k=5)
    """

    def __init__(
        self, index_dir: str | os.PathLike[str], model: str | None = None, recipe: str | None = None,
        memory_budget: int | None = None,
    ) -> None:  # fmt: skip
        index_dir = Path(index_dir).expanduser()
        self.dir = index_dir
        self.store = Store(index_dir / Store.FILENAME)
        self._requested_model = canonical_name(model) if model else None
        self._towers: Towers | None = None
        recipes = load_recipes()
        if recipe is not None and recipe not in recipes:
            self.store.close()
            raise MmsearchError(f"unknown recipe {recipe!r}; known: {', '.join(sorted(recipes))}")
        if recipe is not None and recipe != self.store.get_meta("recipe"):
            self.store.set_meta(recipe=recipe)  # a forced recipe sticks to the index
        if memory_budget is not None and (memory_budget or None) != self.store.get_meta("memory_budget"):
            self.store.set_meta(memory_budget=memory_budget or None)  # so does a budget (0: none)
        recorded = self.store.get_meta("model")
        if recorded and self._requested_model and self._requested_model != recorded:
            self.store.close()
            raise ModelMismatchError(
                f"index {index_dir} was built with model {recorded!r}, not {self._requested_model!r}: "
                f"omit --model to use it, or re-index into another --index to use {self._requested_model!r}"
            )
        self.spaces = SpaceSet(self.store, index_dir, recipes, self._dim, recipe or self.store.get_meta("recipe"))
        self.searcher = Searcher(self.store, self.spaces, lambda: self.towers)

    @classmethod
    def open(
        cls, index: str | os.PathLike[str] | None = None, model: str | None = None, *, create: bool = False,
        recipe: str | None = None, memory_budget: int | None = None,
    ) -> Engine:  # fmt: skip
        """Open the index at ``index`` (default: ``$MMSEARCH_INDEX`` or the user data dir).

        Args:
            model: Model name for a new index; for an existing one it must match what it was built with.
            create: Create the directory when missing (indexing does; querying does not).
            recipe: Force a FAISS recipe from ``indexes/`` instead of choosing by size.
            memory_budget: Bytes the FAISS indexes may take together (0: no limit); past it the next
                ``index`` run moves spaces to more compressed recipes. Sticks to the index.

        Raises:
            IndexNotFoundError: no index there and ``create`` is false.
            ModelMismatchError: ``model`` differs from the one the index was built with.
        """
        index_dir = resolve_index_dir(index)
        if not (index_dir / Store.FILENAME).exists():
            if not create:
                raise IndexNotFoundError(f"no index at {index_dir}: run `mmsearch index FOLDER` first")
            index_dir.mkdir(parents=True, exist_ok=True)
        engine = cls(index_dir, model=model, recipe=recipe, memory_budget=memory_budget)
        if not create and engine.store.get_meta("model") is None:
            engine.store.close()
            raise IndexNotFoundError(f"index {index_dir} is empty: run `mmsearch index FOLDER` first")
        return engine

    @staticmethod
    def exists(index: str | os.PathLike[str] | None = None) -> bool:
        """Whether an index with a model is there (else opening with ``create`` makes a new one)."""
        try:
            Engine.open(index).close()
        except IndexNotFoundError:
            return False
        return True

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Save pending FAISS changes and release the database."""
        try:
            self.spaces.save()
        finally:
            self.store.close()

    # -- model --------------------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.store.get_meta("model") or self._requested_model or DEFAULT_MODEL

    @property
    def towers(self) -> Towers:
        """The index's encoders by role (:mod:`mmsearch.encoders.towers`), loaded on first use and checked
        against what the index recorded."""
        if self._towers is None:
            meta = {k: self.store.get_meta(k) for k in ("model", "dim", "dims", "fingerprint")}
            # indexes made before towers had roles recorded one dim and no sound space: they keep that
            towers = load_towers(self.model_name, sound=meta["model"] is None or meta["dims"] is not None)
            if meta["model"] is None:
                self.store.set_meta(**record(towers), model=self.model_name, created=time.time())
            else:
                check_recorded(towers, meta)
            self._towers = towers
        return self._towers

    @property
    def encoder(self) -> Encoder:
        """The index's main encoder (its text tower, else its only one), for one-space callers (training)."""
        return self.towers.primary

    def _dim(self, space_name: str) -> int:
        """The dimension of a space's vectors: what the index recorded for its tower, else the tower's."""
        role = space(space_name).tower
        return recorded_dim(role, self.store.get_meta("dims"), self.store.get_meta("dim")) or self.towers.need(role).dim

    # -- indexing -----------------------------------------------------------------------------------------
    def index(
        self, paths: Sequence[str | os.PathLike[str]], options: IndexOptions | None = None, *,
        hooks: IngestHooks | None = None, **settings: Any,
    ) -> IngestReport:  # fmt: skip
        """Index (or re-index incrementally) files and folders. Interrupting keeps committed work.

        Args:
            options: How to run (batch size, workers, hidden files, links, OCR, waiting for the lock);
                or give its fields as keywords (``follow_symlinks=True``).
            hooks: Progress and skip callbacks; ``load`` runs just before the model loads (a re-run that
                finds every file indexed and unchanged loads neither the model nor any FAISS file).

        Raises:
            IndexBusyError: another run still holds the index's lock after ``options.wait`` seconds.
            StoreWriteError: the index folder cannot be written (disk full, read-only); what earlier
                batches committed stays, and the next run goes on from there.
            IndexCorruptError: the database is damaged (every page is read first).
        """
        # an index that knows its model loads it only when the run finds work (nothing to do: no model, no
        # FAISS file); a new one loads it first, to record it
        known = self._towers is None and self.store.get_meta("model") is not None
        towers = (lambda: self.towers) if known else self.towers
        report = index_paths(self.store, self.spaces, towers, paths, options or IndexOptions(**settings), hooks)
        if self._towers is not None or not self.searcher.reference_saved():
            with contextlib.suppress(StoreWriteError):  # best effort: a query computes them when missing
                self.searcher.save_reference()  # so that queries never encode the fusion's reference phrases
        return report

    # -- search -------------------------------------------------------------------------------------------
    def search(
        self, text: str | Query | None = None, image: Any = None, target: str | None = None, k: int = 10,
        audio: str | os.PathLike[str] | None = None, **options: Any,
    ) -> list[Hit]:  # fmt: skip
        """Rank indexed items for a query.

        Args:
            text: A :class:`Query`, or query text in the query grammar (``"cat + sunset - water"``).
            image: A query image (path or PIL image), added as a part.
            target: A modality (``image``, ``text``, ``audio``...) or ``any``; default: the kind of an image or
                audio query, else pictures (notes for text-only models).
            k: Number of results.
            audio: A query sound (path), added as a part (its first 60 s are heard).
            **options: Other :class:`Query` fields: ``offset``, ``fusion``, ``path``, ``after``, ``before``,
                ``min_score``, ``dedupe``, ``explain``, ``parts``.

        Items with segments (recordings) carry ``duration`` and ``match`` (the segment that matches best:
        its start and end in seconds, and for speech its words) in their metadata.
        """
        if isinstance(text, Query):
            return self.run_query(text)
        parts = list(options.pop("parts", []))
        parts += [QueryPart(kind, v) for kind, v in (("image", image), ("audio", audio)) if v is not None]
        return self.run_query(Query.parse(text, parts=parts, target=target, k=k, **options))

    def run_query(self, query: Query) -> list[Hit]:
        """Run a :class:`Query`: one committed state of the index, even while an index run writes."""
        return self.searcher.run(query)

    def search_many(self, queries: Sequence[Query]) -> list[list[Hit] | MmsearchError]:
        """Several queries at once, each answered as alone (or with its own error): see Searcher.run_many."""
        return self.searcher.run_many(queries)

    def embed(self, kind: str, values: Sequence[Any], target: str | None = None) -> np.ndarray:
        """Texts, pictures (paths or PIL images) or sounds (paths) -> vectors, as a query of that kind is
        embedded: float32 ``[n, dim]``, L2-normalised.

        Args:
            target: The modality whose own space the vectors are for (default: ``kind``'s own; with a
                composite model, a text for pictures is ``embed("text", [...], target="image")``).

        Raises:
            ModelError: the index's model cannot embed ``kind`` (into ``target``'s space).
        """
        modality = get(kind)
        role = get(target).role if target else modality.role
        if not modality.indexable(self.towers) or self.towers.get(role) is None:
            raise ModelError(f"model {self.model_name} cannot embed {modality.label[1]}")
        threads.wide()
        return modality.embed_queries(values, self.towers, role)

    def dim_of(self, modality: str) -> int:
        """The size of vectors in ``modality``'s own space."""
        return self.towers.need(get(modality).role).dim

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed("text", texts)

    def embed_image(self, images: Sequence[Any]) -> np.ndarray:
        return self.embed("image", images)

    def embed_audio(self, paths: Sequence[str | os.PathLike[str]]) -> np.ndarray:
        return self.embed("audio", paths)

    # -- items and info -----------------------------------------------------------------------------------
    def items(self, ids: Sequence[int]) -> dict[int, Item]:
        """Indexed items by id (missing ids are absent)."""
        return self.store.get_items(ids)

    def vector_ids(self, space: str) -> np.ndarray:
        """Every id in the FAISS index of ``space`` (for consistency checks)."""
        return self.spaces.ids(space)

    def info(self, check: bool = False) -> IndexInfo:
        """What the index holds; with ``check``, every page of the database is read first (a damaged one is
        an IndexCorruptError, not a partial answer; ~0.6 s per GB). `mmsearch info` checks."""
        if check:
            self.store.check()
        recipes = {}
        for name in self.store.spaces():
            meta = read_sidecar(self.dir / f"{name}.faiss")
            recipes[name] = meta["recipe"] if meta and meta["space"] == name else "(rebuilt on next use)"
        return IndexInfo(
            path=str(self.dir), model=self.store.get_meta("model"), dim=self.store.get_meta("dim"),
            fingerprint=self.store.get_meta("fingerprint"),
            schema_version=int(self.store.get_meta("schema_version", SCHEMA_VERSION)), counts=self.store.counts(),
            recipes=recipes, size_bytes=sum(f.stat().st_size for f in self.dir.iterdir() if f.is_file()),
            created=self.store.get_meta("created"),
        )  # fmt: skip
