"""The FAISS indexes of one index directory, one per space, kept as generation-tagged caches of SQLite.

A :class:`SpaceSet` loads each space's FAISS file when it still reflects SQLite's latest commit of
that space (and agrees with it), rebuilds it from SQLite's vectors otherwise, applies ingest's
additions and removals (it is the ingest pipeline's vector sink), and writes changed files back
atomically. FAISS itself stays in :mod:`mmsearch.vector_index`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from mmsearch.errors import MmsearchError
from mmsearch.store import Store
from mmsearch.vector_index import Recipe, VectorIndex, choose_recipe, training_sample

# While an index run writes, FAISS files are saved at least this often (seconds), so that queries
# in other processes load them instead of rebuilding from SQLite.
SAVE_EVERY_S = 30.0


class SpaceSet:
    """Per-space FAISS indexes over one store.

    Args:
        store: The index's SQLite store (the truth).
        folder: Where ``SPACE.faiss`` files live.
        recipes: The recipes by name; ``forced`` names one to use whatever the size.
        dim: A space's vector dimension (asked lazily: an empty index learns it from its model).
    """

    def __init__(
        self,
        store: Store,
        folder: Path,
        recipes: dict[str, Recipe],
        dim: Callable[[str], int],
        forced: str | None = None,
    ) -> None:
        self.store = store
        self.folder = folder
        self.recipes = recipes
        self.forced = forced
        self._dim = dim
        self._indexes: dict[str, VectorIndex] = {}
        self._gen: dict[str, int] = {}  # the store generation each loaded index reflects
        self._dirty: set[str] = set()
        self._present: tuple[tuple[tuple[str, int], ...], set[str]] | None = None
        self._writing = False
        self._last_save = time.monotonic()

    # -- the writer -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """While an index run holds the lock: changes are this process's, saves must succeed."""
        self._writing = True
        for space in [sp for sp, vi in self._indexes.items() if vi.mapped]:
            del self._indexes[space]  # read-only views of their files: loaded again, writable
            self._dirty.discard(space)
        try:
            yield
        finally:
            self._writing = False

    @property
    def dirty(self) -> bool:
        """Whether a changed index has not been saved yet."""
        return bool(self._dirty)

    def add(self, space: str, ids: Sequence[int], vectors: np.ndarray) -> None:
        self._writable(space).add(np.asarray(ids, dtype=np.int64), vectors)
        self._changed(space)

    def remove(self, space: str, ids: Sequence[int]) -> None:
        self._writable(space).remove(ids)
        self._changed(space)

    def _writable(self, space: str) -> VectorIndex:
        vi = self.get(space)
        if vi.mapped:  # only outside writing(): load it again, read into memory
            del self._indexes[space]
            vi = self.get(space, mapped=False)
        return vi

    def _changed(self, space: str) -> None:
        # Only the lock holder writes, so the index now reflects the store's latest commit.
        self._gen[space] = self.store.generation(space)
        self._dirty.add(space)
        if time.monotonic() - self._last_save > SAVE_EVERY_S:
            self.save()  # queries running meanwhile load this instead of rebuilding from SQLite

    # -- loading ----------------------------------------------------------------------------------------
    def get(self, space: str, mapped: bool | None = None) -> VectorIndex:
        """The index of ``space``, loaded from its file if that still agrees with SQLite, else rebuilt.

        Outside an index run the file is memory-mapped (read-only: opened in milliseconds, its pages
        shared with other processes); an index run reads it into memory, to change it.
        """
        vi = self._indexes.get(space)
        if vi is not None:
            return vi
        path = self.folder / f"{space}.faiss"
        with self.store.snapshot():  # the generation and the vectors of one committed state
            gen = self.store.generation(space)
            if path.exists():
                try:
                    mapping = not self._writing if mapped is None else mapped
                    vi, saved_gen = VectorIndex.load(path, self.recipes, space, mapped=mapping)
                    if saved_gen != gen or not self._agrees(space, vi):
                        vi = None
                except MmsearchError:
                    vi = None
            if vi is None:
                vi = self._rebuild(space)
                self._dirty.add(space)
        self._indexes[space] = vi
        self._gen[space] = gen
        return vi

    def rechoose(self) -> None:
        """Mark for :meth:`save`, which rebuilds them, the spaces whose recipe is not the one their size and the
        memory budget call for; an index run calls it before saving, so that a budget set or lifted takes
        effect even on a run that changed nothing (save alone only looks at the spaces the run changed)."""
        for space in self.store.generations():
            n = self.store.count(space)
            if n and self.get(space, mapped=True).recipe.name != self._recipe_for(n, space).name:
                self._dirty.add(space)

    def _agrees(self, space: str, vi: VectorIndex) -> bool:
        """Whether a loaded FAISS file holds what SQLite holds: dimension, count, and 8 vectors spread over
        the ids, each found as itself (a file copied from another space, or zeroed, fails this)."""
        if vi.dim != self._dim(space) or vi.ntotal != self.store.count(space):
            return False
        span = self.store.id_range(space)
        if span is None:
            return vi.ntotal == 0
        probes = np.linspace(span[0], span[1], num=8).astype(np.int64)
        return vi.holds(self.store.vectors_near_ids(space, probes.tolist()))

    def _recipe_for(self, n: int, space: str) -> Recipe:
        """By size, unless forced; under the index's memory budget (``--memory-budget``, bytes for every
        space's FAISS index together) each space gets its share of it, by vectors x dimensions. Flat when
        there are too few vectors to train the chosen recipe's cells (a forced or budgeted recipe on tiny data)."""
        recipe = self.recipes[self.forced] if self.forced else self._chosen(n, space)
        return self.recipes["flat"] if recipe.is_ivf and n < recipe.nlist(n) else recipe

    def _chosen(self, n: int, space: str) -> Recipe:
        budget = self.store.get_meta("memory_budget")
        if not budget:
            return choose_recipe(n, self.recipes)
        dim = self._dim(space)
        sizes = {name: self.store.count(name) * self._dim(name) for name in self.store.generations()}
        sizes[space] = n * dim
        share = float(budget) * sizes[space] / max(1, sum(sizes.values()))
        return choose_recipe(n, self.recipes, dim, share)

    def _rebuild(self, space: str) -> VectorIndex:
        """Build the FAISS index of ``space`` from the vectors in SQLite."""
        ids = self.store.ids(space)
        n = len(ids)
        recipe = self._recipe_for(n, space)
        train = training_sample(recipe, ids, lambda: self.store.iter_vectors(space)) if recipe.is_ivf else None
        return VectorIndex.build(self._dim(space), recipe, self.store.iter_vectors(space), n, train)

    def refresh(self) -> dict[str, int]:
        """Drop loaded indexes that another process's commits made stale (call in a snapshot).

        Returns every space's generation in this snapshot.
        """
        gens = self.store.generations()
        for space in list(self._indexes):
            if self._gen.get(space) != gens.get(space, 0):
                del self._indexes[space]
                self._dirty.discard(space)
        return gens

    def present(self, gens: dict[str, int]) -> set[str]:
        """The spaces holding vectors. ``SELECT DISTINCT`` costs a scan, so the answer is kept until a
        generation changes: the set cannot change without one."""
        key = tuple(sorted(gens.items()))
        if self._present is None or self._present[0] != key:
            self._present = (key, set(self.store.spaces()))
        return self._present[1]

    # -- searching ----------------------------------------------------------------------------------------
    def search(
        self, space: str, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS-shaped ``(D, I)`` of ``space``; see :meth:`VectorIndex.search`."""
        return self.get(space).search(queries, k, allowed)

    def ntotal(self, space: str) -> int:
        return self.get(space).ntotal

    def ids(self, space: str) -> np.ndarray:
        """Every id in the FAISS index of ``space`` (for consistency checks)."""
        return self.get(space).ids()

    def recipe(self, space: str) -> str:
        return self.get(space).recipe.name

    # -- saving ---------------------------------------------------------------------------------------------
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
                vi = self._indexes[space]
                if vi.recipe.name != self._recipe_for(vi.ntotal, space).name:  # a threshold or the budget crossed
                    with self.store.snapshot():
                        vi = self._indexes[space] = self._rebuild(space)
                pending.append((space, vi.write_temp(self.folder / f"{space}.faiss", self._gen[space], space)))
            with SaveLock(self.folder, blocking=self._writing):
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
