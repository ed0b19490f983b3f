"""The frozen encoders' pass over the catalogue on Ray Data: encoder actors on every CPU, GPU and node.

Ray Data's batch inference (``map_batches`` with an actor class) is the engine: each actor holds one
copy of the frozen encoder and the modality's featurizer, and featurises and encodes the blocks of
item indices it is given; Ray schedules the actors over whatever the cluster has (the two cores of a
laptop in local mode, every GPU of every node on a cluster: ``address=auto`` and nothing else
changes). Ray Data was chosen over LitData and Spark because it runs the same program locally and on
a cluster, keeps a model resident per actor (no reload per batch) and streams the blocks through
them with backpressure; LitData's ``optimize``/``map`` needs its own launcher for several nodes.

Media paths are read by the actors: on a cluster the dataset root must be visible at the same path
on every node (a shared file system or a mounted bucket). mmrec must be installed on every node.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from mmrec.data.features import Featurizer, featurize_items
from mmrec.data.ray_media import connect_ray
from mmrec.models.adapt import ModalityEncoder

log = logging.getLogger(__name__)


def picklable(encoder: nn.Module) -> nn.Module:
    """A CPU copy of a frozen ``encoder`` that pickles: parametrized weights (wav2vec2's weight-normed
    positional convolution) are baked into plain ones, which torch refuses to pickle otherwise. A
    frozen encoder computes the same outputs from them."""
    encoder = copy.deepcopy(encoder).cpu()
    for module in [m for m in encoder.modules() if parametrize.is_parametrized(m)]:
        # a deep copy shares the original's generated Parametrized* class, and removing a
        # parametrization edits that class: the copy gets a class of its own first
        cls = type(module)
        module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
        for name in list(module.parametrizations):
            parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return encoder


class CatalogueActor:
    """One Ray actor: featurises a block of item indices for ``modality`` and runs the frozen encoder."""

    def __init__(self, encoder, featurizer: Featurizer, modality: str, threads: int, use_gpu: bool):
        import ray

        torch.set_num_threads(threads)  # the actor's share of the node, not every core
        self.device = torch.device("cuda" if use_gpu else "cpu")
        # the encoder travels once through the object store, not once per actor creation
        self.encoder = (ray.get(encoder) if isinstance(encoder, ray.ObjectRef) else encoder).to(self.device).eval()
        self.featurizers, self.modality = {modality: featurizer}, modality

    @torch.no_grad()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = featurize_items(self.featurizers, batch["item"].tolist())
        m = self.modality
        mask = items.present[m]
        out = self.encoder(
            items.inputs[m].to(self.device), items.input_mask[m].to(self.device), mask.to(self.device)
        )  # (B, D)
        # a batch's media problems ride on its first row, so no per-row lists are needed
        problems = np.full(len(batch["item"]), "", dtype=object)
        problems[0] = "\n".join(items.problems)
        return {
            "item": batch["item"],
            "features": out.float().cpu().numpy(),
            "present": mask.numpy(),
            "problems": problems,
        }


class RayCatalogue:
    """Encodes a catalogue with frozen encoders on a Ray cluster (a local one when ``address`` is None).

    ``actors`` encoder copies run at once (None: as many as the cluster's CPUs, or GPUs when
    ``gpus_per_actor`` > 0, allow), each with ``cpus_per_actor`` CPU threads and ``gpus_per_actor``
    GPUs, on batches of ``batch_size`` items. Called as the cache's engine:
    ``(encoder, modality, num_items) -> (features (N, D), present (N,), problems)``.
    """

    def __init__(
        self,
        featurizers: Mapping[str, Featurizer],
        address: str | None = None,
        actors: int | None = None,
        cpus_per_actor: float = 1,
        gpus_per_actor: float = 0,
        batch_size: int = 256,
    ):
        if batch_size < 1 or cpus_per_actor <= 0 or gpus_per_actor < 0 or (actors is not None and actors < 1):
            raise ValueError(
                "catalogue.engine: expected batch_size >= 1, cpus_per_actor > 0, gpus_per_actor >= 0 and actors "
                f">= 1 (or null), got {batch_size}, {cpus_per_actor}, {gpus_per_actor}, {actors}"
            )
        self.featurizers, self.address, self.actors = dict(featurizers), address, actors
        self.cpus_per_actor, self.gpus_per_actor, self.batch_size = cpus_per_actor, gpus_per_actor, batch_size

    def connect(self) -> int:
        """Joins (or starts) the Ray cluster; the number of actors its resources hold at once."""
        return connect_ray(self.address, self.actors, self.cpus_per_actor, self.gpus_per_actor, "catalogue.engine")

    def __call__(
        self, encoder: ModalityEncoder, modality: str, num_items: int
    ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        import ray

        features = torch.zeros(num_items, encoder.output_dim)
        present = torch.zeros(num_items, dtype=torch.bool)
        problems: list[str] = []
        if num_items == 0:
            return features, present, problems
        actors = self.connect()
        shared = ray.put(picklable(encoder))
        # blocks made in the driver (no read tasks): a read task would wait for a CPU the actors hold
        blocks = np.array_split(np.arange(num_items), max(actors, math.ceil(num_items / (4 * self.batch_size))))
        dataset = (
            ray.data.from_numpy(blocks)
            .rename_columns({"data": "item"})
            .map_batches(
                CatalogueActor,
                fn_constructor_kwargs={
                    "encoder": shared,
                    "featurizer": self.featurizers[modality],
                    "modality": modality,
                    "threads": max(1, int(self.cpus_per_actor)),
                    "use_gpu": self.gpus_per_actor > 0,
                },
                batch_size=self.batch_size,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=self.cpus_per_actor,
                num_gpus=self.gpus_per_actor,
            )
        )
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):  # in any order: rows carry their item
            index = torch.from_numpy(batch["item"].astype(np.int64))
            features[index], present[index] = torch.from_numpy(batch["features"]), torch.from_numpy(batch["present"])
            problems.extend(p for text in batch["problems"] if text for p in text.split("\n"))
        log.info("encoded %d items for %s on Ray with %d actor(s)", num_items, modality, actors)
        return features, present, problems
