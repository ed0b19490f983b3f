"""mmrec.benchmark on CPU with the tiny presets: every mode runs and reports (no timing asserts)."""

import pytest

from mmrec.benchmark import run, table

pytestmark = pytest.mark.integration  # full train / export / serve runs: `pytest -m integration`


def test_every_mode_runs_with_the_reference(compose, data_dir, tmp_path):
    from conftest import TINY_DATA, TINY_MODEL

    overrides = [
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        *TINY_DATA,
        *TINY_MODEL,
        "+experiment=fusion_attn",
        "benchmark.batch_size=8",
        "benchmark.steps=1",
        "benchmark.warmup=1",
        "benchmark.num_users=50",
        "benchmark.rank.users=64",
        "benchmark.rank.items=3000",
        "benchmark.rank.dim=16",
        "benchmark.data.items=16",
        "benchmark.data.workers=[0]",
    ]
    results = run(compose("benchmark", overrides, tmp_path / "run"))
    modes = results["modes"]
    assert set(modes) == {"e2e", "frozen", "cached", "encode", "rank", "data, shards vs decoding (0 workers)"}
    for mode in ("e2e", "frozen", "cached", "encode"):
        assert modes[mode]["mmrec"]["samples_per_s"] > 0 and modes[mode]["reference"]["samples_per_s"] > 0
        assert modes[mode]["mmrec"]["flops_per_sample"] > 0 and modes[mode]["ratio"] > 0
    # training every encoder costs more FLOPs per sample than training on cached outputs
    assert modes["e2e"]["mmrec"]["flops_per_sample"] > 10 * modes["cached"]["mmrec"]["flops_per_sample"]
    assert (
        modes["rank"]["mmrec"]["seconds"] > 0
        and modes["data, shards vs decoding (0 workers)"]["mmrec"]["samples_per_s"] > 0
    )
    assert "| e2e |" in table(results)
