"""The audio modality: an ``audio`` file (or a ``video``'s audio track), a fixed window resampled
to the model's rate, and a wav2vec2-style model (torchaudio or Hugging Face) with masked pooling
over time. The featurizer's window is 16-bit PCM; the encoder turns it into floats on the device
(half the bytes of float32 through the loader, the GPU copy and the media shards)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path

import torch
import torchaudio
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmrec.data.media import MediaError, load_audio
from mmrec.data.schema import Catalogue
from mmrec.modalities import Feature, Modality
from mmrec.modalities.text import check_attn_implementation, load_pretrained
from mmrec.models.adapt import ModalityEncoder, apply_training_mode, masked_mean

NO_AUDIO_STREAM = "no audio stream"
PCM_SCALE = 32767.0  # float samples in [-1, 1] <-> int16


def to_pcm16(wave: torch.Tensor) -> torch.Tensor:
    """(T,) float samples -> int16 PCM; samples beyond [-1, 1] are clipped, as a 16-bit file would be."""
    return (wave.clamp(-1.0, 1.0) * PCM_SCALE).round().to(torch.int16)


class AudioFeaturizer:
    """The first ``seconds`` of an item's audio, mono at ``sample_rate``, int16 PCM, zero-padded with a
    sample mask."""

    def __init__(self, catalogue: Catalogue, sample_rate: int = 16000, seconds: float = 1.0):
        if sample_rate <= 0 or seconds <= 0:
            raise ValueError(
                f"encoder.audio.featurizer: sample_rate and seconds must be > 0, got {sample_rate}, {seconds}"
            )
        self.catalogue, self.sample_rate, self.seconds = catalogue, sample_rate, seconds
        self.samples = int(round(seconds * sample_rate))

    def __call__(self, index: int, problems: list[str]) -> Feature:
        row = self.catalogue.items.iloc[index]
        wave, length = torch.zeros(self.samples), 0
        source = row.audio or row.video
        if source:
            try:
                wave, length = load_audio(self.catalogue.media_path(source), self.sample_rate, self.seconds)
            except MediaError as err:
                if not (err.reason == NO_AUDIO_STREAM and not row.audio):  # a silent video simply has no audio
                    problems.append(str(err))
        return Feature(to_pcm16(wave), torch.arange(self.samples) < length, length > 0)

    def settings(self) -> dict:
        return {"sample_rate": self.sample_rate, "seconds": self.seconds, "samples": "int16"}

    def media_files(self) -> list[Path]:
        items = self.catalogue.items
        return [
            self.catalogue.media_path(a or v, check=False) for a, v in zip(items["audio"], items["video"]) if a or v
        ]

    def encoder_kwargs(self) -> dict:
        return {}


BACKENDS = ("torchaudio", "hf")


class AudioBackbone(nn.Module):
    """(B, T) int16 PCM waveform + (B, T) sample mask (True on real samples) -> (B, D).

    Pooling covers only the output frames computed from real samples, so padding never
    changes an item's embedding.
    """

    def __init__(self, model: nn.Module, backend: str):
        super().__init__()
        self.model, self.backend = model, backend

    def forward(self, waveform: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if waveform.dtype != torch.int16:
            raise TypeError(f"audio must be int16 PCM (AudioFeaturizer's output), got {waveform.dtype}")
        waveform = waveform.float() / PCM_SCALE
        lengths = mask.sum(1)
        if self.backend == "torchaudio":
            # torchaudio masks attention beyond ``lengths``; the conv front end sees only zeros there.
            waveform = waveform * mask
            frames, frame_lengths = self.model(waveform, lengths)  # (B, T', D), (B,)
        else:
            frames = self.model(input_values=waveform * mask, attention_mask=mask.long()).last_hidden_state
            frame_lengths = self.model._get_feat_extract_output_lengths(lengths)
        frame_mask = torch.arange(frames.shape[1], device=frames.device) < frame_lengths.unsqueeze(1)
        return masked_mean(frames, frame_mask)


class _CheckpointedLayer(nn.Module):
    """Gradient checkpointing for torchaudio transformer layers, which have no switch of their own."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, *args, **kwargs):
        if not (self.training and torch.is_grad_enabled()):
            return self.layer(*args, **kwargs)
        return checkpoint(self.layer, *args, use_reentrant=False, **kwargs)


def _torchaudio_model(bundle: str | None, checkpoint_path: str | None, architecture: Mapping | None) -> nn.Module:
    if architecture:
        return torchaudio.models.wav2vec2_model(**dict(architecture))
    if not bundle:
        raise ValueError("encoder.audio needs either 'architecture' (random init) or 'bundle' (e.g. WAV2VEC2_BASE)")
    if not hasattr(torchaudio.pipelines, bundle):
        raise ValueError(
            f"unknown torchaudio bundle '{bundle}': expected a name from torchaudio.pipelines such as WAV2VEC2_BASE"
        )
    pipeline = getattr(torchaudio.pipelines, bundle)
    if checkpoint_path:  # a local copy of the bundle's weights
        model = torchaudio.models.wav2vec2_model(**pipeline._params)
        model.load_state_dict(torch.load(checkpoint_path, map_location="cpu", weights_only=True))
        return model
    try:
        return pipeline.get_model()
    except Exception as err:  # download failures surface as URLError/HTTPError/RuntimeError
        raise OSError(
            f"cannot fetch torchaudio bundle '{bundle}' weights: save `{bundle}.get_model().state_dict()` where the "
            f"network is reachable and set encoder.audio.checkpoint_path to that file. ({err})"
        ) from err


def build_encoder(
    backend: str = "torchaudio",
    mode: str = "frozen",
    bundle: str | None = None,
    checkpoint_path: str | None = None,
    architecture: Mapping | None = None,
    name_or_path: str | None = None,
    pretrained: bool = True,
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj"),
    lora_r: int = 8,
    lora_alpha: int = 16,
    gradient_checkpointing: bool = False,
    attn_implementation: str = "sdpa",
) -> ModalityEncoder:
    """Build the audio ModalityEncoder.

    torchaudio: ``architecture`` (wav2vec2_model kwargs, random init) or ``bundle`` (+ optional
    local ``checkpoint_path``); its attention is PyTorch's SDPA. hf: ``Wav2Vec2Model.from_pretrained
    (name_or_path)``, hub id or folder, with transformers' ``attn_implementation`` kernel.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown audio backend '{backend}': expected one of {BACKENDS}")
    if backend == "torchaudio":
        if attn_implementation != "sdpa":
            raise ValueError(
                f"encoder.audio.attn_implementation '{attn_implementation}' needs backend=hf: torchaudio's "
                "wav2vec2 always uses PyTorch's SDPA"
            )
        model = _torchaudio_model(bundle, checkpoint_path, architecture)
        width = model.encoder.transformer.layers[0].attention.embed_dim
        if gradient_checkpointing:
            layers = model.encoder.transformer.layers
            for i, layer in enumerate(layers):
                layers[i] = _CheckpointedLayer(layer)
    else:
        from transformers import Wav2Vec2Model

        if not name_or_path:
            raise ValueError("encoder.audio.name_or_path is required for backend=hf")
        check_attn_implementation(attn_implementation, "encoder.audio")
        if pretrained:
            load = partial(Wav2Vec2Model.from_pretrained, attn_implementation=attn_implementation)
            model = load_pretrained(load, name_or_path, "wav2vec2 model")
        else:  # the architecture only (e.g. an export bundle, whose weights are loaded afterwards)
            from transformers import AutoModel, Wav2Vec2Config

            config = load_pretrained(Wav2Vec2Config.from_pretrained, name_or_path, "wav2vec2 config")
            model = AutoModel.from_config(config, attn_implementation=attn_implementation)
        width = model.config.hidden_size
        if gradient_checkpointing:
            model.gradient_checkpointing_enable()
    model = apply_training_mode(model, mode, list(lora_targets), lora_r, lora_alpha)
    return ModalityEncoder(AudioBackbone(model, backend), width, mode)


def bundle_architecture(config: dict) -> dict:
    """A torchaudio-bundle config rewritten to its architecture alone (random init, nothing fetched)."""
    if config.get("backend", "torchaudio") == "torchaudio" and not config.get("architecture") and config.get("bundle"):
        config["architecture"] = dict(getattr(torchaudio.pipelines, config["bundle"])._params)
        config.update(bundle=None, checkpoint_path=None)
    return config


class AudioModality(Modality):
    """An audio track (or a video's) through a wav2vec2-style model."""

    reads_media = True

    def request_fields(self, featurizer_config: Mapping) -> dict[str, str]:
        return {"audio": "path", "video": "path"}

    def offline_config(self, config: dict, encoder, featurizer, folder: Path, bundle_path: str) -> dict:
        if config.get("backend") == "hf":
            encoder.encoder.model.config.save_pretrained(folder)
            config.update(pretrained=False, name_or_path=bundle_path)
            return config
        return bundle_architecture(config)

    def random_init(self, config: dict) -> dict:
        return bundle_architecture(config)

    def example_inputs(self, featurizer_config: Mapping, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = int(featurizer_config.get("sample_rate", 16000) * featurizer_config.get("seconds", 1.0))
        return torch.randint(-3000, 3000, (batch, n), dtype=torch.int16), torch.ones(batch, n, dtype=torch.bool)


MODALITY = AudioModality()
