import json

import pytest
import yaml

from mmrec.report import main


def make_run(root, name, seed, recall):
    run = root / f"{name}-{seed}"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"test/recall@20": recall, "test_cold/recall@20": recall / 2}))
    (run / "config.yaml").write_text(yaml.safe_dump({"run_name": name, "seed": seed}))


def test_report_pools_seeds_and_draws_a_chart(tmp_path):
    for seed, value in enumerate([0.2, 0.4]):
        make_run(tmp_path, "fusion_attn", seed, value)
    make_run(tmp_path, "text_only", 0, 0.1)
    main([str(tmp_path), "--metrics", "test/recall@20", "test_cold/recall@20"])
    report = (tmp_path / "report.md").read_text()
    assert "| fusion_attn | 2 | 0.3000 ± 0.1414 | 0.1500 ± 0.0707 |" in report
    assert "| text_only | 1 | 0.1000 ± 0.0000 | 0.0500 ± 0.0000 |" in report
    png = (tmp_path / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_report_errors_name_the_problem(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path)])
    assert "no metrics.json found below" in capsys.readouterr().err
    make_run(tmp_path, "a", 0, 0.1)
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--metrics", "test/recall@7"])
    assert "metric(s) ['test/recall@7'] appear in no run" in capsys.readouterr().err
