"""adapter.layers_to_transform: the adapter on some decoder layers only, refused where the base has no such layer."""

import pytest

from gatekeeper.cli import main
from tests.conftest import write_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def test_only_the_named_layer_is_adapted_and_the_candidate_checks(tmp_path, tiny_base, tiny_task):
    from safetensors import safe_open

    recipe = write_recipe(tmp_path / "upper", tiny_base, tiny_task,
                          adapter={"r": 4, "alpha": 8, "dropout": 0.0, "layers_to_transform": [1],
                                   "target_modules": ["q_proj", "v_proj"]})
    assert main(["train", str(recipe), "-q"]) == 0
    with safe_open(tmp_path / "upper" / "v1" / "adapter" / "adapter_model.safetensors", "pt") as f:
        layers = {name.split(".layers.")[1].split(".")[0] for name in f.keys()}
    assert layers == {"1"}
    assert main(["check", str(tmp_path / "upper" / "v1"), "--out", str(tmp_path / "report"), "-q"]) == 0


def test_a_layer_the_base_lacks_is_one_line_before_any_weights_load(tmp_path, tiny_base, tiny_task, capsys):
    recipe = write_recipe(tmp_path / "deep", tiny_base, tiny_task,
                          adapter={"r": 4, "alpha": 8, "dropout": 0.0, "layers_to_transform": [0, 7],
                                   "target_modules": ["q_proj", "v_proj"]})
    assert main(["train", str(recipe), "-q"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if "error" in line] == [
        "gatekeeper: error: adapter.layers_to_transform names layer 7; the base has 2 (0 to 1)"]
    assert not list((tmp_path / "deep").glob("v*"))


def test_layers_with_a_pattern_target_are_refused_as_peft_would(tmp_path, tiny_base, tiny_task, capsys):
    recipe = write_recipe(tmp_path / "pattern", tiny_base, tiny_task,
                          adapter={"r": 4, "alpha": 8, "layers_to_transform": [1], "target_modules": "all-linear"})
    assert main(["train", str(recipe), "-q"]) == 2
    assert "layers_to_transform needs target_modules as a list" in capsys.readouterr().err
