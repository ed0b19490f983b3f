import subprocess
import sys

import pandas as pd
import pytest

pytestmark = pytest.mark.integration  # full train / export / serve runs: `pytest -m integration`


def run_validate(*args):
    return subprocess.run([sys.executable, "-m", "mmrec.validate", *args], capture_output=True, text=True, timeout=300)


def test_report_on_clean_data(tiny_dataset):
    out = run_validate("data=native", f"data.root={tiny_dataset}")
    assert out.returncode == 0, out.stderr
    assert "items                 60" in out.stdout
    assert "summary: 0 media problem(s), 0 unusable item(s)" in out.stdout and out.stdout.rstrip().endswith("OK")


def test_media_problems_are_listed_but_not_fatal(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"junk")
    pd.DataFrame({"item_id": ["a", "b"], "title": ["x", "y"], "image": ["bad.png", ""]}).to_csv(
        tmp_path / "items.csv", index=False
    )
    pd.DataFrame({"user_id": ["u"], "item_id": ["a"], "timestamp": [1]}).to_csv(
        tmp_path / "interactions.csv", index=False
    )
    out = run_validate("data=native", f"data.root={tmp_path}")
    assert out.returncode == 0
    assert "summary: 1 media problem(s), 0 unusable item(s)" in out.stdout
    assert (
        sum("PROBLEM media:" in line and "bad.png: cannot decode image" in line for line in out.stdout.splitlines())
        == 1
    )


def test_unusable_items_fail_unless_the_model_can_embed_them(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"junk")
    pd.DataFrame({"item_id": ["a", "b"], "title": ["", "y"], "image": ["bad.png", ""]}).to_csv(
        tmp_path / "items.csv", index=False
    )
    pd.DataFrame({"user_id": ["u"], "item_id": ["a"], "timestamp": [1]}).to_csv(
        tmp_path / "interactions.csv", index=False
    )
    out = run_validate("data=native", f"data.root={tmp_path}", "encoder/audio=none")
    assert out.returncode == 1
    assert (
        "PROBLEM unusable item: a (row 2 of the items table)" in out.stdout
        and "model.empty_items=learned" in out.stderr
    )
    assert (
        run_validate(
            "data=native", f"data.root={tmp_path}", "encoder/audio=none", "model.empty_items=learned"
        ).returncode
        == 0
    )


def test_structural_errors_exit_nonzero(tmp_path):
    pd.DataFrame({"item_id": ["a", "a"]}).to_csv(tmp_path / "items.csv", index=False)
    pd.DataFrame({"user_id": ["u"], "item_id": ["q"], "timestamp": [1]}).to_csv(
        tmp_path / "interactions.csv", index=False
    )
    out = run_validate("data=native", f"data.root={tmp_path}", "decode=false")
    assert out.returncode == 1
    assert (
        "duplicate item_id ['a'] in line(s) 3" in out.stderr and "unknown item id(s) ['q'] in line(s) 2" in out.stderr
    )


def test_missing_dataset_exit_2(tmp_path):
    out = run_validate("data=native", f"data.root={tmp_path / 'nothing'}")
    assert out.returncode == 2 and "NOT FOUND" in out.stderr


def test_every_media_problem_is_one_line_and_counted(tmp_path):
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path.parent / "outside.png")
    (tmp_path / "link.png").symlink_to(tmp_path.parent / "outside.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "ok.png").read_bytes()[:30])
    (tmp_path / "empty.wav").write_bytes(b"")
    items = {
        "item_id": ["a", "b", "c", "d", "e", "f"],
        "title": ["t", "t", "t", "t", "t", ""],
        "image": ["ok.png", "../outside.png", "link.png", "cut.png", "/etc/hostname", "missing.png"],
        "audio": ["", "", "", "", "empty.wav", ""],
    }
    pd.DataFrame(items).to_csv(tmp_path / "items.csv", index=False)
    pd.DataFrame({"user_id": ["u"], "item_id": ["a"], "timestamp": [1]}).to_csv(
        tmp_path / "interactions.csv", index=False
    )
    out = run_validate("data=native", f"data.root={tmp_path}")
    problems = [line for line in out.stdout.splitlines() if "PROBLEM" in line]
    assert len(problems) == 7, out.stdout  # six bad files and item f, whose only modality is missing
    for needle in (
        "outside the dataset root",
        "absolute media path refused",
        "cannot decode image",
        "file is empty",
        "file not found",
    ):
        assert any(needle in line for line in problems), needle
    assert "summary: 6 media problem(s), 1 unusable item(s)" in out.stdout
    assert out.returncode == 1  # item f cannot be embedded under the default model.empty_items=error
