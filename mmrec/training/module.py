"""The LightningModule: two-tower training with frozen-encoder caching and full-ranking evaluation."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from torchmetrics.classification import BinaryAUROC

from mmrec.data.batches import TrainBatch
from mmrec.data.features import ItemBatch
from mmrec.evaluation.ranking import rank_and_score
from mmrec.losses.distributed import rank_and_world
from mmrec.losses.two_tower import TwoTowerLoss
from mmrec.models.two_tower import TwoTowerModel
from mmrec.training.cache import ProblemReport, cache_key, encode_catalogue, load_or_encode, weights_digest

log = logging.getLogger(__name__)


class RecModule(L.LightningModule):
    """Trains a TwoTowerModel with TwoTowerLoss; validation and test rank the whole catalogue.

    ``encoder_configs[m]`` is the config of encoder m (it keys the cache of frozen encoders);
    ``optimizer`` is a partial ``torch.optim`` constructor taking (param_groups).
    """

    def __init__(
        self,
        model: TwoTowerModel,
        loss: TwoTowerLoss,
        optimizer: Callable,
        encoder_configs: Mapping[str, Mapping],
        encoder_lr_scale: float = 0.1,
        warmup_ratio: float = 0.05,
        ks: tuple[int, ...] = (10, 20, 50),
        cache_dir: str = ".cache/mmrec/embeddings",
        run_config: Mapping | None = None,
    ):
        super().__init__()
        self.model, self.loss = model, loss
        self.optimizer_factory, self.encoder_configs = optimizer, {m: dict(c) for m, c in encoder_configs.items()}
        self.encoder_lr_scale, self.warmup_ratio = encoder_lr_scale, warmup_ratio
        self.ks, self.cache_dir = tuple(ks), Path(cache_dir)
        self.run_config = dict(run_config or {})
        self.frozen = tuple(m for m in model.modalities if model.encoders[m].mode == "frozen")
        self.problems = ProblemReport()
        self.auc = BinaryAUROC()
        self._cached = False

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store the resolved run config (for mmrec.evaluate) and the W&B run id (for resuming)."""
        checkpoint["mmrec_config"] = self.run_config
        for logger in self.loggers:
            if type(logger).__name__ == "WandbLogger":
                checkpoint["mmrec_wandb_id"] = logger.version

    @property
    def live_modalities(self) -> tuple[str, ...]:
        return tuple(m for m in self.model.modalities if m not in self.frozen)

    # -- data-dependent state ------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule
        counts = dm.item_train_counts.double()
        self.register_buffer("log_q", (counts.clamp(min=1) / counts.sum()).log().float(), persistent=False)
        self.register_buffer("popularity", counts.float(), persistent=False)
        self.register_buffer("train_keys", dm.train_pairs(), persistent=False)
        self.register_buffer("cold_items", torch.from_numpy(dm.indexed.cold_items), persistent=False)

    def _ensure_cache(self) -> None:
        """Encode the catalogue with each frozen encoder once (or read it from disk)."""
        if self._cached:
            return
        dm = self.trainer.datamodule
        for m in self.frozen:
            key = cache_key(m, self.encoder_configs[m], dm.fingerprint(), weights_digest(self.model.encoders[m]))
            path = self.cache_dir / f"{dm.dataset.name}-{m}-{key}.pt"
            features, present = load_or_encode(
                path, lambda m=m: encode_catalogue(self.model.encoders[m], m, dm.item_dataloader((m,)), dm.num_items, self.device, self.problems)
            )
            self.register_buffer(f"cached_{m}", features.to(self.device), persistent=False)
            self.register_buffer(f"cached_{m}_present", present.to(self.device), persistent=False)
            log.info("%s: %d of %d items have it", m, int(present.sum()), len(present))
        if self.problems.count:
            log.warning("%d media file(s) could not be decoded; those modalities count as missing", self.problems.count)
        self._cached = True

    def on_fit_start(self) -> None:
        self._ensure_cache()

    def on_validation_start(self) -> None:
        self._ensure_cache()

    def on_test_start(self) -> None:
        self._ensure_cache()

    def interacted(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """True where (user, item) is a training interaction; broadcasts like ``users * items``."""
        keys = users * len(self.popularity) + items
        pos = torch.searchsorted(self.train_keys, keys.flatten()).clamp(max=len(self.train_keys) - 1)
        return (self.train_keys[pos] == keys.flatten()).view(keys.shape)

    # -- shared item path ------------------------------------------------------------------------
    def embed_items(self, items: ItemBatch):
        """Item-tower output for an ItemBatch: live encoders run now, frozen ones come from the cache."""
        self.problems.add(items.problems)
        features = self.model.encode(items.inputs, items.input_mask, items.present, self.live_modalities)
        present = {m: items.present[m] for m in self.live_modalities}
        for m in self.frozen:
            features[m] = getattr(self, f"cached_{m}")[items.index]
            present[m] = getattr(self, f"cached_{m}_present")[items.index]
        return self.model.embed_items(features, present, items.index)

    def training_step(self, batch: TrainBatch, batch_idx: int) -> torch.Tensor:
        item_out = self.embed_items(batch.items)
        emb = item_out.embedding  # (M, D)
        users = self.model.embed_users(emb[batch.history], batch.history_mask, batch.user)  # (B, D)
        pos_ids, neg_ids = batch.items.index[batch.pos], batch.items.index[batch.neg]  # (B,), (B, K)
        neg_valid = ~self.interacted(batch.user.unsqueeze(1), neg_ids) & (neg_ids != pos_ids.unsqueeze(1))
        out = self.loss(users, emb[batch.pos], emb[batch.neg], batch.user, pos_ids, neg_valid, self.log_q[pos_ids], self.interacted)
        size = len(batch.user)
        self.log("train/loss", out.total, prog_bar=True, batch_size=size)
        self.log_dict({"train/contrastive": out.contrastive, "train/bce": out.bce, "train/temperature": 1.0 / self.loss.contrastive.logit_scale.exp()}, batch_size=size)
        if item_out.modality_weights is not None:
            weights = item_out.modality_weights.float().mean(0)
            self.log_dict({f"train/weight_{m}": weights[i] for i, m in enumerate(self.model.modalities)}, batch_size=size)
        return out.total

    # -- evaluation: embed the catalogue in steps, rank users at epoch end ----------------------------
    def _start_eval(self) -> None:
        n, d = len(self.popularity), self.model.item_tower.dim
        self._table = torch.zeros(n, d, device=self.device)
        self._filled = torch.zeros(n, device=self.device)

    def _eval_step(self, batch: ItemBatch) -> None:
        self._table[batch.index] = self.embed_items(batch).embedding.float()
        self._filled[batch.index] = 1.0

    def _finish_eval(self, part: str) -> None:
        table, filled = self._table, self._filled
        rank, world = rank_and_world()
        if world > 1:  # each rank embedded a shard (the sampler may repeat items: average them)
            table, filled = table * filled.unsqueeze(1), filled.clone()
            dist.all_reduce(table), dist.all_reduce(filled)
            table = table / filled.clamp(min=1).unsqueeze(1)
        embedded = filled > 0
        if not bool(embedded.all()):
            limited = self.trainer.fast_dev_run or self.trainer.limit_val_batches != 1.0 or self.trainer.limit_test_batches != 1.0
            if not limited:
                raise RuntimeError(f"{part}: {int((~embedded).sum())} catalogue items were not embedded; the item loader must cover the catalogue")
            log.warning("%s: only %d of %d items embedded (limited batches): ranking among those only", part, int(embedded.sum()), len(embedded))
        es = self.trainer.datamodule.eval_set(part)
        mine = torch.arange(rank, len(es), world)  # every user on exactly one rank, no padding
        history = es.history[mine].to(self.device)
        users = self.model.embed_users(table[history], es.history_mask[mine].to(self.device), es.users[mine].to(self.device))
        target_ptr, target_items = _select_rows(es.target_ptr, es.target_items, mine)
        exclude_ptr, exclude_items = _select_rows(es.exclude_ptr, es.exclude_items, mine)
        groups = {"all": torch.ones_like(self.cold_items), "warm": ~self.cold_items, "cold": self.cold_items}
        sums = rank_and_score(users, table, target_ptr.to(self.device), target_items.to(self.device), exclude_ptr.to(self.device), exclude_items.to(self.device), groups, self.popularity, self.ks, embedded)
        if world > 1:
            for t in sums.tensors():
                dist.all_reduce(t)
        metrics = sums.metrics(part)
        metrics[f"{part}/auc"] = self._pointwise_auc(users, table, target_ptr, target_items, exclude_ptr, exclude_items)
        self.log_dict({k: float(v) for k, v in metrics.items()}, sync_dist=False, rank_zero_only=False)
        del self._table, self._filled

    def _pointwise_auc(self, users, table, target_ptr, target_items, exclude_ptr, exclude_items) -> float:
        """AUC of the BCE scorer: each target pair against one random unseen, non-target item."""
        lengths = (target_ptr[1:] - target_ptr[:-1]).to(self.device)
        row = torch.repeat_interleave(torch.arange(len(users), device=self.device), lengths)
        pos_items = target_items.to(self.device)
        gen = torch.Generator(device="cpu").manual_seed(0)
        neg_items = torch.randint(len(table), (len(row),), generator=gen).to(self.device)
        excluded = self._in_csr(row, neg_items, target_ptr, target_items) | self._in_csr(row, neg_items, exclude_ptr, exclude_items)
        scorer = self.loss.scorer
        pos_scores = scorer(users[row], table[pos_items])
        neg_scores = scorer(users[row[~excluded]], table[neg_items[~excluded]])
        self.auc.reset()
        self.auc.update(torch.cat([pos_scores, neg_scores]).float(), torch.cat([torch.ones_like(pos_scores), torch.zeros_like(neg_scores)]).long())
        return float(self.auc.compute()) if len(pos_scores) else math.nan

    @staticmethod
    def _in_csr(row: torch.Tensor, items: torch.Tensor, ptr: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        """Whether ``items[i]`` is in CSR row ``row[i]``."""
        ptr, flat = ptr.to(items.device), flat.to(items.device)
        lengths = ptr[1:] - ptr[:-1]
        owner = torch.repeat_interleave(torch.arange(len(lengths), device=items.device), lengths)
        n = max(int(items.max()) + 1 if len(items) else 1, int(flat.max()) + 1 if len(flat) else 1)
        keys = torch.sort(owner * n + flat).values
        query = row * n + items
        pos = torch.searchsorted(keys, query).clamp(max=max(len(keys) - 1, 0))
        return (keys[pos] == query) if len(keys) else torch.zeros_like(query, dtype=torch.bool)

    def on_validation_epoch_start(self) -> None:
        self._start_eval()

    def validation_step(self, batch: ItemBatch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._finish_eval("valid")

    def on_test_epoch_start(self) -> None:
        self._start_eval()

    def test_step(self, batch: ItemBatch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._finish_eval("test")

    # -- optimisation ----------------------------------------------------------------------------
    def configure_optimizers(self):
        """AdamW groups: encoders at ``lr * encoder_lr_scale``; no weight decay on norms, biases,
        embeddings and scalars. Linear warmup, then cosine decay to zero."""
        base = self.optimizer_factory.keywords.get("lr", 1e-3)
        groups: dict[tuple[bool, bool], list] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            is_encoder = name.startswith("model.encoders.")
            no_decay = param.ndim < 2 or "embedding" in name or "norm" in name
            groups.setdefault((is_encoder, no_decay), []).append(param)
        param_groups = [
            {"params": params, "lr": base * (self.encoder_lr_scale if enc else 1.0), **({"weight_decay": 0.0} if no_decay else {})}
            for (enc, no_decay), params in sorted(groups.items())
        ]
        optimizer = self.optimizer_factory(param_groups)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.warmup_ratio * total)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _select_rows(ptr: torch.Tensor, flat: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The sub-CSR of ``rows``."""
    starts, ends = ptr[rows], ptr[rows + 1]
    lengths = ends - starts
    new_ptr = torch.cat([ptr.new_zeros(1), lengths.cumsum(0)])
    offsets = torch.arange(int(new_ptr[-1])) - torch.repeat_interleave(new_ptr[:-1], lengths)
    return new_ptr, flat[torch.repeat_interleave(starts, lengths) + offsets]
