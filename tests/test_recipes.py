"""FAISS recipes: selection by size, and ANN recall against exact search (the FAISS way)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import COLOURS, solid

from mmsearch import Engine
from mmsearch.encoders import l2_normalize
from mmsearch.vector_index import VectorIndex, choose_recipe, load_recipes


def test_recipes_ship_and_cover_every_size() -> None:
    recipes = load_recipes()
    assert {"flat", "ivf", "ivf-sq8", "ivf-pq"} <= set(recipes)
    assert choose_recipe(0).name == "flat"
    assert choose_recipe(199_999).name == "flat"
    assert choose_recipe(200_000).name == "ivf"
    assert choose_recipe(5_000_000).name == "ivf-sq8"
    assert choose_recipe(20_000_000).name == "ivf-pq"
    assert recipes["ivf"].factory_for(1_000_000) == "IVF4000,Flat"
    assert recipes["ivf-pq"].factory_for(10_000_000, 384) == "IVF6324_HNSW32,PQ192x4fs"
    # bytes a vector takes in RAM: code + id
    assert [recipes[r].bytes_per_vector(384) for r in ("flat", "ivf", "ivf-sq8", "ivf-pq")] == [1544, 1544, 392, 104]
    # a memory budget moves to the first recipe whose vectors fit, never to a less compressed one
    assert choose_recipe(100_000, recipes, 384, budget=200e6).name == "flat"  # 154 MB fit
    assert choose_recipe(100_000, recipes, 384, budget=100e6).name == "ivf-sq8"
    assert choose_recipe(5_000_000, recipes, 384, budget=1e9).name == "ivf-pq"
    assert choose_recipe(5_000_000, recipes, 384, budget=1e3).name == "ivf-pq"  # nothing fits: the smallest
    assert choose_recipe(5_000_000, recipes, 384, budget=1e12).name == "ivf-sq8"


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Photo-collection-like data: many tight-ish clusters, not uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2_000, dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return l2_normalize(x)


def recall_at_10(recipe_name: str | None, n: int, dim: int = 64) -> tuple[str, float]:
    data = clustered(n, dim, seed=0)
    queries = clustered(500, dim, seed=1)
    ids = np.arange(10, 10 + n, dtype=np.int64)  # ids are not positions
    recipes = load_recipes()
    recipe = recipes[recipe_name] if recipe_name else choose_recipe(n, recipes)
    rng = np.random.default_rng(2)
    train = data[rng.choice(n, size=min(n, recipe.nlist(n) * 64), replace=False)]
    chunks = ((ids[s : s + 50_000], data[s : s + 50_000]) for s in range(0, n, 50_000))
    ann = VectorIndex.build(dim, recipe, chunks, n, train)
    exact = VectorIndex.build(dim, recipes["flat"], [(ids, data)], n)
    _, got = ann.search(queries, 10)
    _, want = exact.search(queries, 10)
    hits = sum(len(set(g) & set(w)) for g, w in zip(got.tolist(), want.tolist(), strict=True))
    np.testing.assert_array_equal(ann.ids(), ids)
    return recipe.name, hits / want.size


@pytest.mark.slow
def test_ivf_recall_at_10_on_a_set_large_enough_to_select_it() -> None:
    name, recall = recall_at_10(None, 200_000)
    assert name == "ivf"
    assert recall >= 0.95, recall


@pytest.mark.slow
def test_ivf_sq8_recall_at_10() -> None:
    # The size that selects ivf-sq8 (2M) is too slow to build in a unit test; the structure and
    # its nprobe are the same at 150k, where exact ground truth is cheap.
    name, recall = recall_at_10("ivf-sq8", 150_000)
    assert name == "ivf-sq8"
    assert recall >= 0.95, recall


def test_engine_with_a_forced_ivf_recipe_stays_consistent(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    for i in range(300):
        solid(root / f"p{i:03d}.png", COLOURS[i % 6], size=(24, 24))
    with Engine.open(tmp_path / "idx", model="fake", create=True, recipe="ivf") as eng:
        eng.index([root])
        assert eng.spaces.recipe("image") == "ivf"
        for p in list(root.iterdir())[:40]:
            p.unlink()
        eng.index([root])
        np.testing.assert_array_equal(eng.vector_ids("image"), eng.store.ids("image"))
        hits = eng.search(text="blue", k=10)
        assert all("blue" in h.path or int(Path(h.path).stem[1:]) % 6 == 2 for h in hits)
    with Engine.open(tmp_path / "idx") as eng:  # the forced recipe is remembered
        solid(root / "extra.png", "red", size=(24, 24))
        eng.index([root])
        assert eng.info().recipes["image"] == "ivf"


def test_ivf_pq_with_exact_rerank_recall_and_deletions() -> None:
    """The large recipe: 4-bit PQ codes rank k_factor x k candidates, the exact vectors (SQLite's, here the
    array) re-rank them; deletions leave it; its consistency check tells its own vectors from others."""
    n, dim = 60_000, 64
    data, queries = clustered(n, dim, seed=0), clustered(300, dim, seed=1)
    ids = np.arange(5, 5 + n, dtype=np.int64)
    recipes = load_recipes()
    recipe = recipes["ivf-pq"]
    train = data[np.random.default_rng(2).choice(n, size=min(n, recipe.nlist(n) * 16), replace=False)]
    chunks = ((ids[s : s + 20_000], data[s : s + 20_000]) for s in range(0, n, 20_000))
    ann = VectorIndex.build(dim, recipe, chunks, n, train)
    gone = ids[::7]
    ann.remove(gone)
    keep = np.ones(n, bool)
    keep[::7] = False
    exact = VectorIndex.build(dim, recipes["flat"], [(ids[keep], data[keep])], int(keep.sum()))
    _, cand = ann.search(queries, 50)  # what the engine asks for 10 hits: max(50, 4 x k)
    assert cand.shape[1] == 50 * recipe.k_factor
    assert not np.isin(cand, gone).any()
    _, want = exact.search(queries, 10)
    got = []
    for q, row in zip(queries, cand, strict=True):
        row = row[row >= 0]
        scores = data[row - 5] @ q  # the exact re-rank, as the engine does from SQLite
        got.append(row[np.argsort(-scores)[:10]])
    recall = np.mean([len(set(g.tolist()) & set(w.tolist())) / 10 for g, w in zip(got, want, strict=True)])
    # this data is hard for any cell structure (an IVF over full vectors finds ~0.84 of it with these cells
    # and probes): the codes plus the exact re-rank must lose almost nothing against full vectors
    full = VectorIndex.build(dim, replace(recipe, factory="IVF{nlist},Flat", params={**recipe.params, "k_factor": 1}),
                             [(ids[keep], data[keep])], int(keep.sum()), train)  # fmt: skip
    _, cells = full.search(queries, 10)
    ceiling = np.mean([len(set(c.tolist()) & set(w.tolist())) / 10 for c, w in zip(cells, want, strict=True)])
    assert recall >= ceiling - 0.02, (recall, ceiling)
    # without the re-rank the codes alone rank much worse: the exact step is doing work
    _, rough = ann.search(queries, 10)  # the codes' own top 10
    rough_recall = np.mean([len(set(r[:10].tolist()) & set(w.tolist())) / 10 for r, w in zip(rough, want, strict=True)])
    assert rough_recall < recall
    probe = ids[keep][::5000]
    assert ann.holds([(int(i), data[i - 5]) for i in probe])
    assert not ann.holds([(int(i), data[(i - 5 + 1) % n]) for i in probe])  # another item's vector


def test_memory_budget_moves_a_space_to_a_compressed_recipe_and_back(tmp_path: Path) -> None:
    root = tmp_path / "notes"
    root.mkdir()
    words = ["red", "green", "blue", "sea", "sky", "car", "tree", "sand", "rock", "rain", "snow", "sun"]
    for i in range(1100):
        (root / f"n{i:04d}.txt").write_text(f"{words[i % 12]} {words[(i // 12) % 12]} note {i}")
    with Engine.open(tmp_path / "idx", model="fake", create=True, memory_budget=1024) as eng:
        eng.index([root])
        assert eng.info().recipes["text"] == "ivf-pq"
        compressed = [[h.score for h in eng.search(text=q, target="text", k=12)] for q in words]
    with Engine.open(tmp_path / "idx", memory_budget=0) as eng:  # no budget: the next run goes back
        eng.index([root])
        assert eng.info().recipes["text"] == "flat"
        exact = [[h.score for h in eng.search(text=q, target="text", k=12)] for q in words]
    # candidates from the codes, re-scored exactly from SQLite: the scores exact search gives
    np.testing.assert_allclose(compressed, exact, atol=1e-5)


def test_each_search_takes_the_faiss_path_for_its_own_size() -> None:
    """FAISS picks its matrix-product path by a process-wide threshold: a batch used to lower it for good,
    so every single query after it took the product path (2.5x slower at 100k). Each search sets it for
    its own size, and both paths give the same answers."""
    import faiss

    from mmsearch import vector_index

    rng = np.random.default_rng(3)
    data = l2_normalize(rng.standard_normal((500, 16)).astype(np.float32))
    ids = np.arange(500, dtype=np.int64) * 3 + 1
    index = VectorIndex.build(16, load_recipes()["flat"], [(ids, data)], 500)
    queries = l2_normalize(rng.standard_normal((vector_index.BLAS_FROM_QUERIES, 16)).astype(np.float32))

    D_batch, I_batch = index.search(queries, 10)
    assert faiss.cvar.distance_compute_blas_threshold <= len(queries)  # the batch: one matrix product
    alone = [index.search(q[None], 10) for q in queries]
    assert faiss.cvar.distance_compute_blas_threshold > 10**6  # one query: scanned, whatever came before
    for row, (scores, found) in enumerate(alone):
        assert found[0].tolist() == I_batch[row].tolist()
        np.testing.assert_allclose(scores[0], D_batch[row], atol=1e-6)
    exact = np.argsort(-(queries @ data.T), axis=1, kind="stable")[:, :10]
    assert (I_batch == ids[exact]).mean() > 0.99  # and both are the true nearest (ties aside)


def test_batches_over_a_mapped_flat_index_are_one_prepacked_product(tmp_path: Path, monkeypatch) -> None:
    """A batch over a read-only flat index goes through ONNX Runtime's prepacked product, with FAISS's
    neighbours and scores; one query, a filtered search, a writable index, or the switch off: FAISS."""
    from mmsearch import flat_product

    rng = np.random.default_rng(5)
    n, dim = flat_product.MIN_VECTORS, 32
    data = l2_normalize(clustered(n, dim, 5))
    ids = rng.permutation(n * 3)[:n].astype(np.int64)  # ids are not positions
    writable = VectorIndex.build(dim, load_recipes()["flat"], [(ids, data)], n)
    writable.save(tmp_path / "s.faiss", 1, "image")
    mapped, _ = VectorIndex.load(tmp_path / "s.faiss", load_recipes(), "image", mapped=True)
    queries = l2_normalize(data[rng.integers(0, n, 12)] + 0.3 * rng.standard_normal((12, dim)).astype(np.float32))

    want_D, want_I = writable.search(queries, 40)
    assert not writable._product  # a writable index never gets one (it would go stale)
    got_D, got_I = mapped.search(queries, 40)
    assert isinstance(mapped._product, flat_product.FlatProduct)
    assert (got_I == want_I).mean() > 0.99  # ties at float32 rounding aside
    np.testing.assert_allclose(got_D, want_D, atol=1e-5)
    assert set(got_I.ravel()) <= set(ids.tolist())
    exact = ids[np.argsort(-(queries @ data.T), axis=1, kind="stable")[:, :40]]
    assert (got_I == exact).mean() > 0.99
    # k beyond the index: every vector, best first (as FAISS gives)
    small, _ = VectorIndex.load(tmp_path / "s.faiss", load_recipes(), "image", mapped=True)
    D_all, I_all = small.search(queries[:4], n + 10)
    assert I_all.shape == (4, n) and sorted(I_all[0].tolist()) == sorted(ids.tolist())
    assert np.all(np.diff(D_all, axis=1) <= 1e-6)

    monkeypatch.setenv("MMSEARCH_FLAT_PRODUCT", "0")
    off, _ = VectorIndex.load(tmp_path / "s.faiss", load_recipes(), "image", mapped=True)
    off_D, off_I = off.search(queries, 40)
    assert not off._product and off_I.tolist() == want_I.tolist()
