"""FAISS vector index per space, built from a TOML recipe (``indexes/*.toml``).

Inner product on L2-normalised float32 vectors; ids are SQLite item ids. SQLite holds every
vector, so a FAISS file is a cache: it is saved atomically with the store generation it
reflects, and rebuilt from SQLite whenever that generation does not match.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import threading
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from mmsearch.errors import IndexCorruptError, MmsearchError, StoreWriteError

# A batch of at least this many queries is searched as one matrix product (BLAS), fewer query by query.
# FAISS decides by its process-wide ``distance_compute_blas_threshold``, which it does not compare with the
# number of queries alone (in faiss-cpu 1.15 one query at 100k x 384 takes the product path with the
# threshold at 64 and the scan with it at 1000), so every search sets it for its own size: huge below
# this many queries, 1 from it. Measured at 100k x 384 on 1 thread: a scan costs ~20 ms a query; the
# product ~50 ms for 1-8 queries, 65 for 16 (memory-bound: each pass reads every vector once).
BLAS_FROM_QUERIES = 4
_SCAN_ALWAYS = 1 << 30  # a threshold no search reaches: query by query


@dataclass(frozen=True)
class Recipe:
    """One ``indexes/*.toml`` file."""

    name: str
    factory: str
    min_items: int
    max_items: int
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def is_ivf(self) -> bool:
        return "IVF" in self.factory

    def nlist(self, n: int) -> int:
        p = self.params
        raw = int(p.get("nlist_per_sqrt", 4) * math.sqrt(max(n, 1)))
        return int(min(max(raw, p.get("nlist_min", 1)), p.get("nlist_max", 65536)))

    def pq_m(self, dim: int) -> int:
        """PQ recipes: sub-quantizers for ``dim`` (one per ``pq_dims`` dimensions, even, dividing ``dim``)."""
        want = max(2, dim // int(self.params.get("pq_dims", 4)))
        return next(m for m in range(want, 1, -1) if dim % m == 0 and m % 2 == 0) if dim % 2 == 0 else dim

    def factory_for(self, n: int, dim: int = 0) -> str:
        return self.factory.format(nlist=self.nlist(n), m=self.pq_m(dim) if "{m}" in self.factory else 0)

    def bytes_per_vector(self, dim: int) -> float:
        """What one vector costs in this recipe's FAISS index (RAM when loaded, and on disk): its code plus
        its 8-byte id (cells, lists and the coarse quantizer are left out: small per vector at scale)."""
        codes = self.factory_for(1, dim).split(",")[1:] or ["Flat"]
        total = 8.0
        for part in codes:
            if part in ("Flat", "RFlat"):
                total += 4 * dim
            elif m := re.fullmatch(r"SQ(\d+)", part):
                total += dim * int(m.group(1)) / 8
            elif part == "SQfp16":
                total += 2 * dim
            elif m := re.fullmatch(r"PQ(\d+)(?:x(\d+))?(fs)?", part):
                total += int(m.group(1)) * int(m.group(2) or 8) / 8
            else:
                total += 4 * dim  # unknown: assume full vectors
        return total

    @property
    def tolerance(self) -> float:
        """How far a stored vector may score against its own code (quantisation error)."""
        return float(self.params.get("check_tolerance", 0.02))

    @property
    def k_factor(self) -> int:
        """How many times the candidates asked for a search returns: compressed codes rank roughly, and the
        engine re-scores every candidate exactly with the vectors in SQLite (the refine step is the engine's)."""
        return max(1, int(self.params.get("k_factor", 1)))


def _recipe_dir() -> Any:
    """``indexes/`` as installed (package data ``mmsearch/indexes``) or in a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "indexes", here.parent / "indexes"):
        if any(candidate.glob("*.toml")):
            return candidate
    try:
        return resources.files("mmsearch.indexes")
    except ModuleNotFoundError as e:
        raise MmsearchError("no index recipes found: the mmsearch install is incomplete") from e


def load_recipes() -> dict[str, Recipe]:
    """All shipped recipes by name."""
    out: dict[str, Recipe] = {}
    for entry in _recipe_dir().iterdir():
        if not str(entry.name).endswith(".toml"):
            continue
        data = tomllib.loads(entry.read_text(encoding="utf-8"))
        name, factory = data.pop("name"), data.pop("factory")
        out[name] = Recipe(name, factory, int(data.pop("min_items")), int(data.pop("max_items")), data)
    if not out:
        raise MmsearchError("no index recipes found: the mmsearch install is incomplete")
    return out


def choose_recipe(
    n: int, recipes: dict[str, Recipe] | None = None, dim: int = 0, budget: float | None = None
) -> Recipe:
    """The recipe whose size range contains ``n`` vectors; with a memory ``budget`` (bytes, for ``n`` vectors
    of ``dim``), the first recipe from there on up (more compressed) whose vectors fit in it, else the most
    compressed one."""
    recipes = recipes or load_recipes()
    ordered = sorted(recipes.values(), key=lambda r: r.min_items)
    chosen = next((r for r in ordered if r.min_items <= n < r.max_items), ordered[-1])
    if budget is None or not dim:
        return chosen
    larger = [r for r in ordered if r.min_items >= chosen.min_items]
    for r in larger:
        if r.bytes_per_vector(dim) * n <= budget:
            return r
    return min(larger, key=lambda r: r.bytes_per_vector(dim))


def training_sample(
    recipe: Recipe, ids: np.ndarray, chunks: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]
) -> np.ndarray:
    """The vectors an IVF recipe trains its cells on: ``train_per_list`` per cell, drawn at random (seeded)
    from ``ids``, read from ``chunks()`` (``(ids, vectors)`` in id order) without holding the rest."""
    n = len(ids)
    want = min(n, recipe.nlist(n) * int(recipe.params.get("train_per_list", 64)))
    keep = np.sort(np.random.default_rng(0).choice(ids, size=want, replace=False))
    return np.concatenate([v[np.isin(i, keep)] for i, v in chunks()])


def _as_matrix(x: np.ndarray, dim: int) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.shape[1] != dim:
        raise MmsearchError(f"vector dimension {x.shape[1]} does not match the index ({dim})")
    return x


class VectorIndex:
    """A FAISS index of one space (CPU master copy; a GPU copy for search when a GPU is present)."""

    def __init__(self, dim: int, recipe: Recipe, index: Any, mapped: bool = False) -> None:
        self.dim = dim
        self.recipe = recipe
        self.index = index
        self.mapped = mapped  # a read-only view of its file: FAISS aborts the process on any change to it
        self._gpu: Any = None
        self._product: Any = None  # a FlatProduct, made on the first batch (read-only flat indexes only)
        self._apply_search_params()

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def empty(cls, dim: int, recipe: Recipe) -> VectorIndex:
        """An empty index. IVF recipes need training: use :meth:`build` for them."""
        import faiss

        if recipe.is_ivf:
            raise MmsearchError(f"recipe {recipe.name} needs training vectors; use VectorIndex.build")
        return cls(dim, recipe, faiss.index_factory(dim, recipe.factory, faiss.METRIC_INNER_PRODUCT))

    @classmethod
    def build(
        cls,
        dim: int,
        recipe: Recipe,
        chunks: Iterable[tuple[np.ndarray, np.ndarray]],
        n: int,
        train: np.ndarray | None = None,
    ) -> VectorIndex:
        """Build from (ids, vectors) chunks; ``train`` is the IVF training sample."""
        import faiss

        if recipe.is_ivf:
            index = faiss.index_factory(dim, recipe.factory_for(n, dim), faiss.METRIC_INNER_PRODUCT)
            if train is None or len(train) == 0:
                raise MmsearchError(f"recipe {recipe.name} needs training vectors")
            index.train(_as_matrix(train, dim))
            vi = cls(dim, recipe, index)
        else:
            vi = cls.empty(dim, recipe)
        for ids, vecs in chunks:
            vi.add(ids, vecs)
        return vi

    def _apply_search_params(self) -> None:
        import faiss

        if self.recipe.is_ivf:
            ivf = faiss.extract_index_ivf(self.index)
            ivf.nprobe = int(self.recipe.params.get("nprobe", 16))
            quantizer = faiss.downcast_index(ivf.quantizer)
            if isinstance(quantizer, faiss.IndexHNSWFlat):  # cells found by a graph: it must see nprobe of them
                quantizer.hnsw.efSearch = max(2 * ivf.nprobe, int(self.recipe.params.get("quantizer_ef", 128)))

    # -- mutation ------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def _check_writable(self) -> None:
        if self.mapped:
            raise MmsearchError("a memory-mapped vector index is read-only: load it unmapped to change it")

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        self._check_writable()
        if len(ids) == 0:
            return
        self.index.add_with_ids(_as_matrix(vecs, self.dim), np.ascontiguousarray(ids, dtype=np.int64))
        self._gpu = None

    def remove(self, ids: Iterable[int]) -> int:
        import faiss

        self._check_writable()
        arr = np.ascontiguousarray(list(ids), dtype=np.int64)
        if arr.size == 0:
            return 0
        n = int(self.index.remove_ids(faiss.IDSelectorBatch(arr.size, faiss.swig_ptr(arr))))
        self._gpu = None
        return n

    def ids(self) -> np.ndarray:
        """Every id in the index, sorted."""
        import faiss

        if self.recipe.is_ivf:
            invlists: Any = faiss.extract_index_ivf(self.index).invlists
            parts = []
            for lst in range(invlists.nlist):
                size = invlists.list_size(lst)
                if size:
                    parts.append(faiss.rev_swig_ptr(invlists.get_ids(lst), size).copy())
            out = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        else:
            out = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        return np.sort(out)

    # -- search --------------------------------------------------------------------------------
    def _searcher(self) -> Any:
        from mmsearch import device

        if self._gpu is None:
            self._gpu = self.index
            if device.faiss_gpus() > 0:
                import faiss

                try:
                    self._gpu = faiss.index_cpu_to_all_gpus(self.index)
                except RuntimeError:  # a structure the GPU build does not support: the CPU copy
                    self._gpu = self.index
        return self._gpu

    def _batch_product(self) -> Any:
        """The prepacked product batches of this index are searched with (see :mod:`mmsearch.flat_product`),
        or None: FAISS. Only a memory-mapped index (nothing changes it) on the CPU gets one."""
        from mmsearch import device, flat_product

        if self._product is None:
            self._product = False
            if self.mapped and device.faiss_gpus() == 0 and flat_product.suits(self.index):
                self._product = flat_product.FlatProduct(self.index)
        return self._product or None

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """FAISS-shaped ``(D, I)``; missing neighbours have id -1.

        ``allowed``: only these ids may be returned (FAISS ``IDSelectorBatch``, applied inside the
        search, so ``k`` results come back whenever ``k`` allowed vectors exist). Searched on the CPU copy.
        """
        import faiss

        q = _as_matrix(queries, self.dim)
        # per search (a batch left the product path on for the single queries after it, 2.5x slower); a
        # search in another thread at the same moment may take the other path: as exact, only slower
        faiss.cvar.distance_compute_blas_threshold = 1 if len(q) >= BLAS_FROM_QUERIES else _SCAN_ALWAYS
        k = max(1, min(int(k) * self.recipe.k_factor, max(self.ntotal, 1)))
        if self.ntotal == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        if allowed is None:
            if len(q) >= BLAS_FROM_QUERIES and (product := self._batch_product()) is not None:
                return product.search(q, k)
            D, I = self._searcher().search(q, k)  # noqa: E741 - FAISS naming
            return D, I
        ids = np.ascontiguousarray(allowed, dtype=np.int64)
        if ids.size == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        selector = faiss.IDSelectorBatch(ids.size, faiss.swig_ptr(ids))
        if self.recipe.is_ivf:
            params: Any = faiss.SearchParametersIVF()
            params.nprobe = int(self.recipe.params.get("nprobe", 16))
        else:
            params = faiss.SearchParameters()
        params.sel = selector
        D, I = self.index.search(q, min(k, ids.size), params=params)  # noqa: E741
        return D, I

    # -- checks --------------------------------------------------------------------------------
    def holds(self, samples: Sequence[tuple[int, np.ndarray]], tolerance: float = 0.02) -> bool:
        """Whether each (id, vector) of ``samples`` (read from SQLite) is in this index as that vector.

        A FAISS file is a cache that anyone can overwrite (another space's file copied over it, zeroed
        bytes): the generation in its sidecar is not proof. Flat indexes reconstruct each id; IVF ones are
        searched with each vector restricted to its own id (only ``nprobe`` cells are scanned), which
        must score the vector's own norm (within ``tolerance`` for quantised codes).
        """
        import faiss

        if not samples:
            return True
        ids = np.asarray([i for i, _ in samples], dtype=np.int64)
        vecs = _as_matrix(np.stack([v for _, v in samples]), self.dim)
        if not self.recipe.is_ivf:
            try:
                got = np.stack([self.index.reconstruct(int(i)) for i in ids])
            except RuntimeError:  # an id the index does not hold
                return False
            return bool(np.allclose(got, vecs, atol=1e-5))
        params: Any = faiss.SearchParametersIVF()
        params.nprobe = int(self.recipe.params.get("nprobe", 16))
        for i, v in zip(ids, vecs, strict=True):
            one = np.array([i], dtype=np.int64)
            params.sel = faiss.IDSelectorBatch(1, faiss.swig_ptr(one))
            D, I = self.index.search(v[None], 1, params=params)  # noqa: E741
            if int(I[0, 0]) != int(i) or abs(float(D[0, 0]) - float(v @ v)) > max(tolerance, self.recipe.tolerance):
                return False
        return True

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: Path, generation: int, space: str) -> None:
        """Write ``path`` and ``path.json`` atomically (temp files + ``os.replace``)."""
        self.write_temp(path, generation, space).commit()

    def write_temp(self, path: Path, generation: int, space: str) -> PendingSave:
        """Write the index and its sidecar to temp files beside ``path`` (fsynced); nothing is replaced yet.

        The slow part of a save, done before any lock is taken; :meth:`PendingSave.commit` then renames.

        Raises:
            StoreWriteError: the folder cannot be written (disk full, read-only).
        """
        import faiss

        tag = f".tmp{os.getpid()}-{threading.get_ident()}"
        side = path.with_name(path.name + ".json")
        pending = PendingSave(path.with_name(path.name + tag), side.with_name(side.name + tag), path, side)
        meta = {
            "space": space,
            "generation": generation,
            "recipe": self.recipe.name,
            "dim": self.dim,
            "ntotal": self.ntotal,
        }
        try:
            faiss.write_index(self.index, str(pending.tmp))
            _fsync(pending.tmp)
            pending.tmp_side.write_text(json.dumps(meta))
            _fsync(pending.tmp_side)
        except (OSError, RuntimeError) as e:  # FAISS reports a failed write as RuntimeError
            pending.discard()
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip().splitlines()[0]
            raise StoreWriteError(f"cannot write vector index {path}: {reason}") from e
        return pending

    @classmethod
    def load(cls, path: Path, recipes: dict[str, Recipe], space: str, mapped: bool = False) -> tuple[VectorIndex, int]:
        """(index, the generation it reflects). ``mapped``: memory-map the file instead of reading it (a
        query opens a 1M-vector IVF file in milliseconds instead of seconds, and its pages are shared
        between processes); such an index is read-only.

        Raises:
            IndexCorruptError: the file or its sidecar is unreadable, or they disagree with each other or
                with ``space`` (a sidecar holding ``null``, another space's file, another dimension).
        """
        import faiss

        meta = read_sidecar(path)
        if meta is None or meta["space"] != space or meta["recipe"] not in recipes:
            raise IndexCorruptError(f"vector index {path}: its sidecar is missing, damaged or not for {space!r}")
        recipe = recipes[meta["recipe"]]
        flags = (faiss.IO_FLAG_MMAP if recipe.is_ivf else faiss.IO_FLAG_MMAP_IFC) if mapped else 0
        try:
            index = faiss.read_index(str(path), flags)
        except RuntimeError as e:
            damaged = IndexCorruptError(f"cannot read vector index {path}: {str(e).strip().splitlines()[0]}")
            if not mapped:
                raise damaged from e
            try:  # where mapping is not supported (a platform, a file system), read it whole
                index = faiss.read_index(str(path))
            except RuntimeError:
                raise damaged from e
            mapped = False
        if int(index.d) != meta["dim"] or int(index.ntotal) != meta["ntotal"]:
            raise IndexCorruptError(f"vector index {path} does not match its sidecar")
        return cls(meta["dim"], recipe, index, mapped=mapped), meta["generation"]


@dataclass
class PendingSave:
    """A FAISS file and its sidecar written to temp files, waiting to replace the real ones."""

    tmp: Path
    tmp_side: Path
    path: Path
    side: Path

    def commit(self) -> None:
        """Rename both into place, the sidecar last: a crash between the two leaves a sidecar whose
        generation or count disagrees, and the file is rebuilt.

        Raises:
            StoreWriteError: a rename failed.
        """
        try:
            os.replace(self.tmp, self.path)
            os.replace(self.tmp_side, self.side)
        except OSError as e:
            self.discard()
            raise StoreWriteError(f"cannot write vector index {self.path}: {e.strerror or e}") from e

    def discard(self) -> None:
        for leftover in (self.tmp, self.tmp_side):
            with contextlib.suppress(OSError):
                leftover.unlink(missing_ok=True)


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The JSON beside a FAISS file, checked field by field; None when absent or damaged in any way."""
    try:
        meta = json.loads(path.with_name(path.name + ".json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(meta, dict):
        return None
    ints = ("generation", "dim", "ntotal")
    if not all(isinstance(meta.get(k), int) and not isinstance(meta.get(k), bool) and meta[k] >= 0 for k in ints):
        return None
    if not isinstance(meta.get("recipe"), str) or not isinstance(meta.get("space"), str):
        return None
    return meta


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
