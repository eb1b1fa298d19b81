"""The mapper on a Ray cluster: decoding and embedding in a pool of Ray Data actors, writing here.

``mmsearch index --ray`` plans exactly as a local run (the walk, what changed, what left the disk); only
the mapper moves: Ray Data splits the files to read into batches, each actor of the pool loads the
index's towers once and runs the same read step (:class:`~mmsearch.ingest.decode.Decoder`) and embed step
(:func:`~mmsearch.ingest.embed.embed_batch`) as the local pipeline, and the batches come back here in
order, where the writer commits them as a local run would (same items, same vectors, same bookkeeping:
a later local run finds nothing to do). A worker that dies is replaced and its batch retried by Ray; as
only this process writes, and only what came back, nothing is written twice or lost.

The workers open the files by the paths this process found, so every node must see the folders at the
same paths (a local cluster, or a shared file system). Content-hash reuse of vectors already in the index
happens here, not on the workers: a worker embeds every file it is given.
"""

from __future__ import annotations

import logging
import os
import pickle
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from typing import Any

import numpy as np

from mmsearch.errors import MmsearchError
from mmsearch.ingest.walk import Candidate
from mmsearch.modalities import Pending

# environment a worker needs to load the same model the same way (weights caches, hub, offline mode)
_PASSED_ENV = ("XDG_CACHE_HOME", "HF_HOME", "HF_HUB_CACHE", "HF_ENDPOINT", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
# a batch whose actor died is retried on a new one this many times; a file that kills every actor it meets
# (a decoder crash) then fails the run instead of looping
RETRIES = 3


@dataclass
class RayOptions:
    """Where and how wide the mapper runs on Ray.

    Attributes:
        address: A running cluster (``auto``, ``ray://head:10001``); None: the cluster this process already
            joined, else ``$RAY_ADDRESS``, else a new local one (it lives until the process exits or calls
            ``ray.shutdown()``: later runs reuse it). Workers get ``--device`` with the other ``MMSEARCH_*``
            settings.
        actors: Encoder actors in the pool; default: the cluster's CPUs (GPUs when it has them) divided by
            what one actor takes.
        cpus_per_actor: CPUs each actor reserves (its torch threads).
        gpus: GPUs each actor reserves; None: 1 when the cluster has GPUs, else 0.
    """

    address: str | None = None
    actors: int | None = None
    cpus_per_actor: float = 1.0
    gpus: float | None = None


@dataclass(frozen=True)
class WorkerSpec:
    """What an actor needs to load the towers the run has loaded, and to read files as it does."""

    model: str
    sound: bool
    recorded: dict[str, Any]  # dim, dims, fingerprint: the worker's towers must load the same weights
    roles: tuple[str, ...]
    roots: tuple[str, ...]
    follow_symlinks: bool
    decode_size: int
    ocr: bool
    threads: int


def require() -> None:
    """Raises:
    MmsearchError: Ray is not installed."""
    if find_spec("ray") is None:
        raise MmsearchError("--ray needs Ray: pip install 'mmsearch[ray]'")


def connect(address: str | None) -> Any:
    """Join (or start) the Ray cluster, quietly; returns the ``ray`` module.

    Raises:
        MmsearchError: Ray is not installed, or the cluster cannot be reached.
    """
    require()
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # its C++ core logs warnings at "E" level on stderr
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
                configure_logging=True,
            )
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise MmsearchError(f"cannot reach the Ray cluster at {address or 'a new local one'}: {e}") from e
    import ray.data

    for name in ("ray.data", "ray"):  # Ray Data's own log lines on stderr (set up when ray.data is imported)
        logging.getLogger(name).setLevel(logging.ERROR)
    return ray


def _pool(ray: Any, options: RayOptions) -> tuple[int, float]:
    """(actors, GPUs per actor) from what the cluster has."""
    resources = ray.cluster_resources()
    gpus = options.gpus if options.gpus is not None else (1.0 if resources.get("GPU", 0) >= 1 else 0.0)
    if options.actors:
        return options.actors, gpus
    if gpus > 0:
        return max(1, int(resources.get("GPU", 0) // gpus)), gpus
    return max(1, int(resources.get("CPU", 1) // max(options.cpus_per_actor, 0.01))), gpus


class Embedder:
    """One actor of the pool: loads the towers once, then reads and embeds the batches it is given."""

    def __init__(self, spec: WorkerSpec) -> None:
        from mmsearch.encoders import load_towers
        from mmsearch.encoders.towers import check_recorded
        from mmsearch.ingest.decode import Decoder, safe_opener
        from mmsearch.modalities import ReadJob, indexable

        os.environ["MMSEARCH_THREADS"] = str(spec.threads)
        self.towers = load_towers(spec.model, sound=spec.sound)
        check_recorded(self.towers, spec.recorded)
        if tuple(sorted(self.towers.roles)) != spec.roles:
            raise MmsearchError(
                f"model {spec.model} has towers {sorted(self.towers.roles)} on this worker, {list(spec.roles)} "
                "where the run started (a weights file missing here?)"
            )
        self.modalities = {m.name: m for m in indexable(self.towers)}
        opener = safe_opener(spec.follow_symlinks, list(spec.roots))
        # no reuse of vectors by content here: the driver holds the index
        self.jobs = {name: ReadJob(lambda h: None, opener, spec.decode_size, spec.ocr) for name in self.modalities}
        self.decoder = Decoder(self.modalities, self.jobs, opener, workers=2, window=4)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from mmsearch import threads
        from mmsearch.ingest.embed import embed_batch

        threads.wide()  # per OS thread: Ray may call from another thread than the constructor's

        cands: list[Candidate] = [pickle.loads(b) for b in batch["cand"]]
        self.decoder.stopped.clear()
        out: list[Pending | str] = []
        for _, got in self.decoder.run(cands):
            out.append(got if isinstance(got, Pending) else str(got))
        for name in dict.fromkeys(c.modality for c in cands):
            group = [x for x, c in zip(out, cands, strict=True) if isinstance(x, Pending) and c.modality == name]
            if group:
                embed_batch(self.modalities[name], group, self.towers, self.jobs[name])
        for x in out:
            if isinstance(x, Pending):
                x.payload = None  # decoded pixels and samples stay here
        return {"seq": batch["seq"], "result": np.array([pickle.dumps(x) for x in out], dtype=object)}


def _retries() -> dict[str, Any]:
    return {"max_restarts": RETRIES, "max_task_retries": RETRIES}  # Ray Data's default: forever


def _actor_class(spec: WorkerSpec) -> type:
    """An actor class carrying ``spec`` in its definition (shipped with the class), not as constructor
    arguments in the object store, which an actor restarted after its node died may no longer find."""

    class Embed(Embedder):
        def __init__(self) -> None:
            super().__init__(spec)

    return Embed


def embed_remote(
    todo: Sequence[Candidate], spec: WorkerSpec, options: RayOptions, batch_size: int
) -> Iterator[tuple[Candidate, Pending | str]]:
    """Each of ``todo`` read and embedded by the cluster, as (candidate, its item or the reason it was
    skipped), in ``todo`` order, as batches finish.

    Raises:
        MmsearchError: the cluster cannot be reached, or a batch failed on every retry.
    """
    if not todo:
        return
    ray = connect(options.address)
    actors, gpus = _pool(ray, options)
    with warnings.catch_warnings():  # Ray's deprecations of its own settings, not ours to act on
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = _dataset(ray, todo, spec, actors, gpus, options, batch_size)
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for seq, blob in zip(batch["seq"], batch["result"], strict=True):
                yield todo[int(seq)], pickle.loads(blob)
    except MmsearchError:
        raise
    except Exception as e:  # a batch failed on every retry, the cluster went away
        if type(e).__module__.startswith("ray"):
            raise MmsearchError(f"the Ray run failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
        raise


def _dataset(
    ray: Any,
    todo: Sequence[Candidate],
    spec: WorkerSpec,
    actors: int,
    gpus: float,
    options: RayOptions,
    batch_size: int,
) -> Any:
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # the writer commits in the walk's order, as a local run
    ctx.enable_progress_bars = False
    env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
    env.update({k: v for k, v in os.environ.items() if k.startswith("MMSEARCH_")})
    env["MMSEARCH_THREADS"] = str(spec.threads)
    rows = [{"seq": i, "cand": pickle.dumps(c)} for i, c in enumerate(todo)]
    # a block per batch, and at least one per actor (no more actors than blocks: they would only load)
    blocks = min(len(rows), max(actors, -(-len(rows) // batch_size)))
    actors = min(actors, blocks)
    ds = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
        _actor_class(spec),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=options.cpus_per_actor,
        num_gpus=gpus,
        runtime_env={"env_vars": env},
        ray_remote_args_fn=_retries,
    )
    return ds
