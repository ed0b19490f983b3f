"""Lightning callbacks for what researchers read in W&B: throughput and sample recommendations."""

from __future__ import annotations

import logging
import time

import lightning as L
import numpy as np
import torch

log = logging.getLogger(__name__)


class Throughput(L.Callback):
    """Logs each training epoch's wall time and training samples per second."""

    def __init__(self):
        self.start, self.samples = time.perf_counter(), 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start, self.samples = time.perf_counter(), 0  # a resumed epoch does not start again

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start, self.samples = time.perf_counter(), 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        self.samples += len(batch.user)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = time.perf_counter() - self.start
        pl_module.log_dict(
            {
                "train/epoch_time_s": seconds,
                "train/samples_per_s": self.samples * trainer.world_size / max(seconds, 1e-9),
            },
            sync_dist=False,
        )


def parameter_counts(module: torch.nn.Module) -> dict[str, int]:
    """Total and trainable parameters of the model and each of its parts (encoders one by one)."""
    model = module.model
    parts = {"model": model, "item_tower": model.item_tower, "user_tower": model.user_tower}
    parts.update({f"encoder.{m}": e for m, e in model.encoders.items()})
    if model.item_tower.fusion is not None:
        parts["fusion"] = model.item_tower.fusion
    out = {}
    for name, part in parts.items():
        out[f"params/{name}/total"] = sum(p.numel() for p in part.parameters())
        out[f"params/{name}/trainable"] = sum(p.numel() for p in part.parameters() if p.requires_grad)
    return out


class RecommendationTables(L.Callback):
    """After test, logs to W&B: a table of sample users (history, top-K with titles, keyframes as
    images, audio, hit marks) and an item-embedding table (with the dataset's true attributes
    when it has ``attributes.csv``, as the synthetic data does) for W&B's 2-D projection."""

    def __init__(self, users: int = 8, k: int = 10, items: int = 1000):
        self.users, self.k, self.items = users, k, items

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if type(lg).__name__ == "WandbLogger"]
        if not loggers or not trainer.is_global_zero or not hasattr(pl_module, "last_eval"):
            return
        import wandb

        dataset = trainer.datamodule.dataset
        run = loggers[0].experiment
        run.log({"test/recommendations": self._user_table(wandb, pl_module.last_eval, dataset)})
        run.log({"test/item_embeddings": self._item_table(wandb, pl_module.last_eval["items"], dataset)})

    def _media(self, wandb, dataset, row):
        from mmrec.data.media import MediaError, load_audio, load_image

        image = audio = None
        first_image = row.image.split("|")[0].strip() if row.image else ""
        try:
            if first_image:
                image = wandb.Image(load_image(dataset.media_path(first_image)))
        except MediaError:
            pass
        try:
            if row.audio:
                wave, n = load_audio(dataset.media_path(row.audio), 16000, 3.0)
                audio = wandb.Audio(wave[:n].numpy(), sample_rate=16000)
        except MediaError:
            pass
        return image, audio

    def _user_table(self, wandb, last: dict, dataset):
        items, users, es = last["items"], last["users"], last["eval_set"]
        columns = ["user", "history", "rank", "item", "title", "keyframe", "audio", "hit"]
        table = wandb.Table(columns=columns)
        scores = users[: self.users].float() @ items.float().T
        seen = es.seen.dense(0, min(self.users, len(es)), len(items))
        top = scores.masked_fill(seen, float("-inf")).topk(min(self.k, len(items)), dim=1).indices.cpu()
        titles = dataset.items["title"].tolist()
        for r in range(len(top)):
            targets = set(es.targets.select(torch.tensor([r])).items.tolist())
            history = [titles[i] for i in es.history[r][es.history_mask[r]].tolist()]
            for rank, item in enumerate(top[r].tolist(), start=1):
                row = dataset.items.iloc[item]
                image, audio = self._media(wandb, dataset, row)
                table.add_data(
                    int(es.users[r]),
                    " | ".join(history[-5:]),
                    rank,
                    row.item_id,
                    row.title,
                    image,
                    audio,
                    item in targets,
                )
        return table

    def _item_table(self, wandb, items: torch.Tensor, dataset):
        n = min(self.items, len(items))
        chosen = np.linspace(0, len(items) - 1, n).astype(int)
        attributes = None
        path = dataset.root / "attributes.csv"
        if path.is_file():
            import pandas as pd

            attributes = pd.read_csv(path, dtype=str).set_index("item_id")
        extra = list(attributes.columns) if attributes is not None else []
        dims = items.shape[1]
        table = wandb.Table(columns=["item", "title", *extra, *[f"e{d}" for d in range(dims)]])
        vectors = items[torch.from_numpy(chosen)].float().cpu().numpy()
        for i, vec in zip(chosen, vectors):
            row = dataset.items.iloc[i]
            values = (
                [attributes.loc[row.item_id, c] if row.item_id in attributes.index else "" for c in extra]
                if attributes is not None
                else []
            )
            table.add_data(row.item_id, row.title, *values, *vec.tolist())
        return table
