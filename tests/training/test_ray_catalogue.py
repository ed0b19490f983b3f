"""The catalogue encoded by Ray Data encoder actors (local mode) equals the in-process pass."""

import pickle

import pytest
import torch
from torch.nn.utils import parametrize

from mmrec.build import build, make
from mmrec.training.cache import encode_catalogue
from mmrec.training.ray_catalogue import RayCatalogue, picklable
from tests.conftest import compose_config

# the tests that start a local Ray cluster (seconds, the `local_ray` fixture) are in the integration tier


@pytest.mark.integration
def test_ray_actors_give_the_in_process_embeddings_and_problems(train_config, own_data, local_ray):
    broken = sorted(own_data.glob("images/*.png"))[0]
    broken.write_bytes(b"not a png")  # a media problem must come back from the actors too
    cfg = train_config(
        f"paths.data_dir={own_data.parent}",
        "catalogue=ray",
        "catalogue.engine.actors=2",
        "catalogue.engine.batch_size=8",
    )
    dm, module = build(cfg)
    engine = module.features.engine
    assert isinstance(engine, RayCatalogue)
    found = {}
    for m in ("audio", "image", "text"):  # audio: wav2vec2's weight-normed convolution must travel too
        encoder = module.model.encoders[m]
        local = encode_catalogue(encoder, m, dm.item_dataloader((m,)), dm.num_items, torch.device("cpu"))
        features, present, problems = engine(encoder, m, dm.num_items)
        assert features.shape == (60, encoder.output_dim) and present.sum() > 40
        torch.testing.assert_close(features, local[0], rtol=0, atol=1e-6)
        assert torch.equal(present, local[1]) and sorted(problems) == sorted(local[2])
        found[m] = problems
    assert any(broken.name in p for p in found["image"]) and not found["text"]


def test_a_parametrized_encoder_travels_with_its_weights_baked():
    cloudpickle = pytest.importorskip("ray.cloudpickle")  # what Ray serialises with
    conv = torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv1d(2, 3, 4), dim=2)
    plain = picklable(conv)
    assert not parametrize.is_parametrized(plain) and parametrize.is_parametrized(conv)  # the original is untouched
    x = torch.randn(5, 2, 9)
    assert torch.equal(pickle.loads(cloudpickle.dumps(plain))(x), conv(x))
    with pytest.raises(RuntimeError, match="parametriz"):
        cloudpickle.dumps(conv)


@pytest.mark.integration
def test_actors_that_cannot_fit_the_cluster_are_refused(local_ray):
    with pytest.raises(ValueError, match=r"3 actor\(s\) of 1 CPU .* do not fit the Ray cluster's 2.0 CPU"):
        RayCatalogue({}, actors=3).connect()


def test_the_ray_option_builds_the_engine_and_checks_its_settings(tmp_path):
    cfg = compose_config("train", ["catalogue=ray", "catalogue.engine.batch_size=64"], tmp_path)
    engine = make(cfg.catalogue.engine, "catalogue.engine", featurizers={})
    assert (engine.actors, engine.cpus_per_actor, engine.gpus_per_actor, engine.batch_size) == (None, 1, 0, 64)
    assert compose_config("train", [], tmp_path).catalogue.engine is None  # in-process by default
    with pytest.raises(ValueError, match=r"catalogue.engine: expected batch_size >= 1.*got 0"):
        make({**cfg.catalogue.engine, "batch_size": 0}, "catalogue.engine", featurizers={})
