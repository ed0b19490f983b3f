"""Media decoded into shards on Ray Data: decoding actors over every CPU of every node.

Decoding keyframes and audio (MP4/PNG/WAV reads, resizing, resampling) and encoding keyframes as
JPEG is the CPU-heavy part of building media shards; ``RayMedia`` spreads it over a Ray cluster with
``map_batches`` and an actor class, each actor holding one copy of the modality's featurizer (sent once
through the object store), the same engine and pattern as the frozen encoders' catalogue pass
(``mmrec.training.ray_catalogue``). Blocks come back in catalogue order (Ray Data's ``preserve_order``)
and the process that asked writes them into the shard folder, so the folder's format, its atomic
rename and its lock are those of ``mmrec.data.shards``; what travels back is the encoded bytes (a
tenth of the raw pixels with JPEG). Media paths are read by the actors: on a cluster the dataset root
must be visible at the same path on every node, and mmrec installed on each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch


def connect_ray(
    address: str | None, actors: int | None, cpus_per_actor: float, gpus_per_actor: float, option: str
) -> int:
    """Joins (or starts, when ``address`` is None) the Ray cluster; how many actors of that size run at once.

    Asking for more actors than the cluster holds is an error naming ``option``: Ray would otherwise
    wait for resources that never come.
    """
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    resources = ray.cluster_resources()
    fits = int(resources.get("CPU", 0) // cpus_per_actor)
    if gpus_per_actor:
        fits = min(fits, int(resources.get("GPU", 0) // gpus_per_actor))
    if fits < 1 or (actors or 0) > fits:
        raise ValueError(
            f"{option}: {actors or 1} actor(s) of {cpus_per_actor} CPU and {gpus_per_actor} GPU do not fit the "
            f"Ray cluster's {resources.get('CPU', 0)} CPU and {resources.get('GPU', 0)} GPU"
        )
    return actors or fits


class DecodingActor:
    """One Ray actor: featurises the blocks of item indices it is given (``mmrec.data.shards.featurise_block``)."""

    def __init__(self, featurise, threads: int):
        import ray

        torch.set_num_threads(threads)  # the actor's share of the node, not every core
        self.featurise = ray.get(featurise) if isinstance(featurise, ray.ObjectRef) else featurise

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.featurise(batch["item"])


class RayMedia:
    """Decodes a catalogue's media for the shards on a Ray cluster (a local one when ``address`` is None).

    ``actors`` decoders run at once (None: as many as the cluster's CPUs allow), each with
    ``cpus_per_actor`` CPUs, on blocks of ``batch_size`` items. Called as the shards' engine:
    ``(featurise, num_items, modality) -> blocks in catalogue order``.
    """

    def __init__(
        self, address: str | None = None, actors: int | None = None, cpus_per_actor: float = 1, batch_size: int = 64
    ):
        if batch_size < 1 or cpus_per_actor <= 0 or (actors is not None and actors < 1):
            raise ValueError(
                "catalogue.media_engine: expected batch_size >= 1, cpus_per_actor > 0 and actors >= 1 (or null), "
                f"got {batch_size}, {cpus_per_actor}, {actors}"
            )
        self.address, self.actors, self.cpus_per_actor, self.batch_size = address, actors, cpus_per_actor, batch_size

    def __call__(self, featurise: Callable[[np.ndarray], dict], num_items: int, modality: str) -> Iterator[dict]:
        import ray

        actors = connect_ray(self.address, self.actors, self.cpus_per_actor, 0, "catalogue.media_engine")
        count = min(num_items, max(actors, math.ceil(num_items / self.batch_size)))
        blocks = np.array_split(np.arange(num_items), count)
        options = ray.data.DataContext.get_current().execution_options
        ordered = options.preserve_order
        options.preserve_order = True  # the writer appends frames in catalogue order
        try:
            # blocks made in the driver (no read tasks): a read task would wait for a CPU the actors hold
            dataset = (
                ray.data.from_numpy(blocks)
                .rename_columns({"data": "item"})
                .map_batches(
                    DecodingActor,
                    fn_constructor_kwargs={
                        "featurise": ray.put(featurise),
                        "threads": max(1, int(self.cpus_per_actor)),
                    },
                    batch_size=None,  # one block a call: it comes back whole
                    batch_format="numpy",
                    compute=ray.data.ActorPoolStrategy(size=actors),
                    num_cpus=self.cpus_per_actor,
                )
            )
            yield from dataset.iter_batches(batch_size=None, batch_format="numpy")
        finally:
            options.preserve_order = ordered
