"""Lightning callbacks for what researchers read: throughput, sample recommendations, top-K lists."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.loggers import WandbLogger

from mmrec.evaluation.groups import EvalResult
from mmrec.io import atomic_path

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


def top_unseen(last: EvalResult, start: int, stop: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and catalogue indices (rows start..stop of the last evaluation's users, K) of the top-K
    items each user has not seen, as the evaluator ranks them."""
    items, users, es = last.items, last.users, last.eval_set
    scores = users[start:stop].float() @ items.float().T  # (R, I)
    seen = es.seen.select(torch.arange(start, stop, device=es.seen.ptr.device))
    scores[seen.row_of_entries().to(scores.device), seen.items.to(scores.device)] = float("-inf")  # no dense mask
    top = scores.topk(min(k, len(items)), dim=1)
    return top.values.cpu(), top.indices.cpu()


class TopKLists(L.Callback):
    """After test, writes every test user's top-K (seen items masked, as ranked for the metrics) to
    ``dirpath/test_topk.csv``: user_id, rank, item_id, score, hit (a held-out test item), cold (an
    item with no training interaction). Under DDP each rank writes the users it ranked to
    ``test_topk.rank<r>.csv``."""

    def __init__(self, dirpath: str, k: int = 20, chunk_users: int = 1024):
        self.dirpath, self.k, self.chunk_users = Path(dirpath), k, chunk_users

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        last = getattr(pl_module, "last_eval", None)
        if last is None or last.part != "test":
            return
        indexed, es = trainer.datamodule.indexed, last.eval_set
        item_ids = trainer.datamodule.dataset.items["item_id"].to_numpy()
        frames = []
        chunk = max(1, min(self.chunk_users, (1 << 24) // max(1, len(last.items))))  # (chunk, I) scores at a time
        for start in range(0, len(es), chunk):
            stop = min(start + chunk, len(es))
            scores, top = top_unseen(last, start, stop, self.k)
            rows = torch.arange(start, stop)
            hit = es.targets.select(rows).contains(
                torch.arange(stop - start).repeat_interleave(top.shape[1]), top.flatten()
            )
            frames.append(
                pd.DataFrame(
                    {
                        "user_id": np.repeat(indexed.user_ids[es.users[start:stop].cpu().numpy()], top.shape[1]),
                        "rank": np.tile(np.arange(1, top.shape[1] + 1), stop - start),
                        "item_id": item_ids[top.flatten().numpy()],
                        "score": scores.flatten().numpy().round(6),
                        "hit": hit.cpu().numpy(),
                        "cold": indexed.cold_items[top.flatten().numpy()],
                    }
                )
            )
        name = "test_topk.csv" if trainer.world_size == 1 else f"test_topk.rank{trainer.global_rank}.csv"
        self.dirpath.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.dirpath / name) as tmp:
            pd.concat(frames).to_csv(tmp, index=False)
        log.info("top-%d lists of %d test users written to %s", self.k, len(es), self.dirpath / name)


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
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers or not trainer.is_global_zero or not hasattr(pl_module, "last_eval"):
            return
        import wandb

        dataset = trainer.datamodule.dataset
        run = loggers[0].experiment
        run.log({"test/recommendations": self._user_table(wandb, pl_module.last_eval, dataset)})
        run.log({"test/item_embeddings": self._item_table(wandb, pl_module.last_eval.items, dataset)})

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

    def _user_table(self, wandb, last: EvalResult, dataset):
        es = last.eval_set
        columns = ["user", "history", "rank", "item", "title", "keyframe", "audio", "hit"]
        table = wandb.Table(columns=columns)
        _, top = top_unseen(last, 0, min(self.users, len(es)), self.k)
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
