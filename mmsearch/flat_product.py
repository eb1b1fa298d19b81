"""Batches of queries over a flat (exact) index as one prepacked matrix product in ONNX Runtime.

FAISS searches a batch over a flat index with BLAS in blocks of 1024 vectors, packing each block again
for every call; it reads the vectors twice or three times, and on a 2-core machine a batch of 8 queries
over 100k x 384 vectors took 55 ms on one thread. ONNX Runtime's ``Gemm`` with the vectors as a constant
packs them once, when the session is made, into the layout its kernel streams, and its ``TopK`` keeps
the ``k`` best: the same batch takes 24 ms (16 queries: 69 vs 39 ms). The same products, so the same
neighbours (scores equal to float32 rounding; ties at the k-th place may come in another order).

The price is memory: the packed copy is as large as the vectors, so it is made only for a read-only
(memory-mapped) flat index of at most :data:`MAX_BYTES`, on the CPU, on the first batch that searches
it, and lives as long as that index. ``MMSEARCH_FLAT_PRODUCT=0`` turns it off (FAISS for everything).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from mmsearch import threads

MAX_BYTES = 512 << 20  # flat indexes up to this size (the packed copy doubles it): 200k x 512 floats
MIN_VECTORS = 20_000  # below this FAISS is as quick, and a session is not worth its set-up


def enabled() -> bool:
    return os.environ.get("MMSEARCH_FLAT_PRODUCT", "1").strip() != "0"


def suits(index: Any) -> bool:
    """Whether a FAISS index is a flat inner-product one worth a product session."""
    import faiss

    if not enabled() or not isinstance(index, faiss.IndexIDMap):  # (IndexIDMap2 is one)
        return False
    inner = faiss.downcast_index(index.index)
    return (
        isinstance(inner, faiss.IndexFlat)
        and inner.metric_type == faiss.METRIC_INNER_PRODUCT
        and MIN_VECTORS <= inner.ntotal
        and inner.ntotal * inner.d * 4 <= MAX_BYTES
    )


class FlatProduct:
    """``(D, I)`` of a batch over the vectors of one FAISS flat index (``IndexIDMap`` of ``IndexFlatIP``),
    without copying them: the session reads FAISS's own array, which must outlive it (hold the index)."""

    def __init__(self, index: Any) -> None:
        import faiss
        import onnxruntime as ort
        from onnx import TensorProto, helper

        inner: Any = faiss.downcast_index(index.index)
        n, d = int(inner.ntotal), int(inner.d)
        vectors = faiss.rev_swig_ptr(inner.get_xb(), n * d).reshape(n, d)
        self._index = index  # what owns the memory the session reads
        self._ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        self._vectors = ort.OrtValue.ortvalue_from_numpy(vectors)  # a view of FAISS's memory, no copy
        x = TensorProto(name="x", data_type=TensorProto.FLOAT, dims=[n, d], data_location=TensorProto.EXTERNAL)
        x.external_data.add(key="location", value="faiss")  # never read: given below as an OrtValue
        graph = helper.make_graph(
            [
                helper.make_node("Gemm", ["q", "x"], ["scores"], transB=1),
                helper.make_node("TopK", ["scores", "k"], ["D", "I"], axis=1, largest=1, sorted=1),
            ],
            "flat_product",
            [
                helper.make_tensor_value_info("q", TensorProto.FLOAT, ["nq", d]),
                helper.make_tensor_value_info("k", TensorProto.INT64, [1]),
            ],
            [
                helper.make_tensor_value_info("D", TensorProto.FLOAT, ["nq", "k"]),
                helper.make_tensor_value_info("I", TensorProto.INT64, ["nq", "k"]),
            ],
            [x],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads.budget()
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads sleep
        opts.log_severity_level = 3
        opts.add_external_initializers(["x"], [self._vectors])
        self._session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        self.ntotal = n

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best (inner product) of each row of ``queries`` (float32 ``[nq, d]``, C-contiguous)."""
        k = min(int(k), self.ntotal)
        D, positions = self._session.run(None, {"q": queries, "k": np.array([k], dtype=np.int64)})
        return np.ascontiguousarray(D, dtype=np.float32), self._ids[positions]
