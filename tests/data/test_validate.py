import subprocess
import sys

import pandas as pd


def run_validate(*args):
    return subprocess.run([sys.executable, "-m", "mmrec.data.validate", *args], capture_output=True, text=True, timeout=300)


def test_report_on_clean_data(tiny_dataset):
    out = run_validate("data=native", f"data.root={tiny_dataset}")
    assert out.returncode == 0, out.stderr
    assert "items                 60" in out.stdout
    assert "media problems: 0" in out.stdout and out.stdout.rstrip().endswith("OK")


def test_media_problems_are_listed_but_not_fatal(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"junk")
    pd.DataFrame({"item_id": ["a", "b"], "title": ["x", "y"], "image": ["bad.png", ""]}).to_csv(tmp_path / "items.csv", index=False)
    pd.DataFrame({"user_id": ["u"], "item_id": ["a"], "timestamp": [1]}).to_csv(tmp_path / "interactions.csv", index=False)
    out = run_validate("data=native", f"data.root={tmp_path}")
    assert out.returncode == 0
    assert "media problems: 1" in out.stdout and "bad.png: cannot decode image" in out.stdout


def test_structural_errors_exit_nonzero(tmp_path):
    pd.DataFrame({"item_id": ["a", "a"]}).to_csv(tmp_path / "items.csv", index=False)
    pd.DataFrame({"user_id": ["u"], "item_id": ["q"], "timestamp": [1]}).to_csv(tmp_path / "interactions.csv", index=False)
    out = run_validate("data=native", f"data.root={tmp_path}", "decode=false")
    assert out.returncode == 1
    assert "duplicate item_id ['a'] in row(s) 2" in out.stderr and "unknown item id(s) ['q'] in row(s) 1" in out.stderr


def test_missing_dataset_exit_2(tmp_path):
    out = run_validate("data=native", f"data.root={tmp_path / 'nothing'}")
    assert out.returncode == 2 and "NOT FOUND" in out.stderr
