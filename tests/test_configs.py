"""The allowlist of targets for configs read from files (mmrec.configs)."""

import pytest

from mmrec.configs import UntrustedConfigError, check_file_config, is_allowed


def test_the_allowlist():
    assert is_allowed("mmrec.models.fusion.AttentionFusion") and is_allowed("torch.optim.AdamW")
    assert not is_allowed("mmrec.io.write_text") and not is_allowed("pandas.read_pickle")
    assert not is_allowed("os.system") and is_allowed("my_pkg.MyFusion", ["my_pkg."])
    with pytest.raises(
        UntrustedConfigError, match=r"f.yaml: refused: key 'loss\.evil\._target_' names _target_ 'os.system'"
    ):
        check_file_config({"loss": {"evil": {"_target_": "os.system"}}}, "f.yaml")
    check_file_config({"loss": {"evil": {"_target_": "os.system"}}}, "f.yaml", trust=True)
