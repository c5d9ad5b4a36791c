"""The demo models' training script runs end to end and is reproducible (same seed, same weights)."""

import json

import pytest
from safetensors.torch import load_file

from hired.demo.train import main

TINY = ["--seed", "3", "--stage1-scenes", "24", "--train-scenes", "24", "--test-scenes", "2",
        "--stage1-epochs", "1", "--stage2-epochs", "1", "--threads", "1"]


@pytest.mark.parametrize("family", ["llava_next", "internvl"])
def test_training_is_reproducible_and_saves_a_loadable_model(tmp_path, family):
    runs = [tmp_path / "a", tmp_path / "b"]
    for out in runs:
        main(["--family", family, "--out", str(out), *TINY])
    first, second = (load_file(out / "model.safetensors") for out in runs)
    assert first.keys() == second.keys()
    assert all((first[k] == second[k]).all() for k in first), "two runs with one seed differ"
    result = json.loads((runs[0] / "training.json").read_text())
    assert result["family"] == family and result["questions"] > 0 and 0 <= result["accuracy"] <= 1
    assert "Reproduce with" in (runs[0] / "README.md").read_text()
