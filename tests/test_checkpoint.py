"""Interrupted training: no half-written version, and a resumed run ends exactly where an uninterrupted one does."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from gatekeeper.bundle.recipe import load_recipe
from gatekeeper.errors import RecipeError
from gatekeeper.training.checkpoint import WORK_DIR
from gatekeeper.training.loop import train
from gatekeeper.training.versions import existing_versions, write_candidate
from tests.conftest import REPO, write_recipe

# Evaluations at 3 and 6, checkpoints at 2 and 4: a run stopped after step 5 resumes
# from step 4 with its best weights (step 3) differing from its current ones.
TRAINING = {"batch_size": 8, "max_steps": 6, "eval_every": 3, "checkpoint_every": 2, "learning_rate": 0.01,
            "warmup_steps": 1, "seed": 3}
METHODS = {
    # dropout draws from the global RNG, so its state has to come back too
    "lora": {"adapter": {"r": 4, "alpha": 8, "dropout": 0.1}},
    # projections computed at steps 0 and 3: resuming at 4 must bring back the basis from step 3
    "galore": {"method": "galore", "adapter": None, "galore": {"rank": 4, "update_proj_gap": 3}},
}
WEIGHTS = {"lora": "adapter_model.safetensors", "galore": "delta.safetensors"}


pytestmark = pytest.mark.usefixtures("one_thread")  # before the module's training fixtures


class Stop(KeyboardInterrupt):
    pass


def _stop_after(step: int):
    def on_step(info):
        if info.step == step:
            raise Stop
    return on_step


@pytest.mark.parametrize("method", ["lora", "galore"])
def test_resumed_run_is_byte_identical_to_an_uninterrupted_one(method, tmp_path, tiny_base, tiny_task):
    bundles = {}
    for run in ("straight", "interrupted"):
        recipe, root = load_recipe(write_recipe(tmp_path / run, tiny_base, tiny_task, training=TRAINING, **METHODS[method]))
        work = root / WORK_DIR
        if run == "interrupted":
            with pytest.raises(Stop):
                train(recipe, root, _stop_after(5), checkpoints=work)
            assert existing_versions(root) == []
            assert json.loads((work / "latest.json").read_text())["step"] == 4
            assert (work / "step-000004" / "best.safetensors").is_file()  # best (step 0 or 3) is not current
            result = train(recipe, root, checkpoints=work, resume=True)
            assert result.record["resumed_from_step"] == 4
        else:
            result = train(recipe, root, checkpoints=work)
        bundles[run] = (write_candidate(result, recipe, root), result.record)
    (straight, a), (resumed, b) = bundles.values()
    name = WEIGHTS[method]
    assert (straight / "adapter" / name).read_bytes() == (resumed / "adapter" / name).read_bytes()
    for key in ("val_curve", "train_curve", "best_step", "best_val_loss"):
        assert a[key] == b[key], key


def test_resume_refuses_a_checkpoint_from_another_recipe(tmp_path, tiny_base, tiny_task):
    path = write_recipe(tmp_path / "r", tiny_base, tiny_task, training=TRAINING)
    recipe, root = load_recipe(path)
    with pytest.raises(Stop):
        train(recipe, root, _stop_after(3), checkpoints=root / WORK_DIR)
    changed = dict(TRAINING, learning_rate=0.02)
    recipe, root = load_recipe(write_recipe(tmp_path / "r", tiny_base, tiny_task, training=changed))
    with pytest.raises(RecipeError, match="checkpoint is from a different recipe"):
        train(recipe, root, checkpoints=root / WORK_DIR, resume=True)


def test_resume_without_a_checkpoint_is_one_line_and_exit_2(tmp_path, tiny_base, tiny_task, capsys):
    from gatekeeper.cli import main

    recipe = write_recipe(tmp_path / "r", tiny_base, tiny_task, training=TRAINING)
    assert main(["train", str(recipe), "--resume", "-q"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("gatekeeper: error:")]
    assert len(errors) == 1 and "nothing to resume: no checkpoint in" in errors[0] and "Traceback" not in err


def test_ctrl_c_while_writing_leaves_no_version(tmp_path, tiny_base, tiny_task, monkeypatch):
    import gatekeeper.bundle.assembly  # where write_candidate's bundle is signed and published

    recipe, root = load_recipe(write_recipe(tmp_path / "r", tiny_base, tiny_task, training={"max_steps": 1}))
    result = train(recipe, root)

    def interrupted(staging):
        assert (staging / "adapter" / "adapter_model.safetensors").is_file()  # stopped half-way through
        raise KeyboardInterrupt

    monkeypatch.setattr(gatekeeper.bundle.assembly, "sign_bundle", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_candidate(result, recipe, root)
    assert existing_versions(root) == [] and not [p for p in root.iterdir() if p.name.startswith(".v")]


def _gatekeeper(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "gatekeeper.cli", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_killed_training_leaves_no_version_and_resumes_to_the_same_adapter(tmp_path, tiny_base, tiny_task):
    """SIGKILL mid-run (no cleanup code runs at all), then ``train --resume`` against a straight run."""
    training = dict(TRAINING, max_steps=40, eval_every=10, checkpoint_every=5)
    path = write_recipe(tmp_path / "killed", tiny_base, tiny_task, training=training, **METHODS["lora"])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = _gatekeeper("train", str(path), "-q", env=env)
    work = tmp_path / "killed" / WORK_DIR
    deadline = time.monotonic() + 120
    while not (work / "latest.json").is_file() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.communicate()
    assert run.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert existing_versions(tmp_path / "killed") == []
    resumed = _gatekeeper("train", str(path), "--resume", "-q", env=env)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert not work.exists()  # the version exists; its checkpoints are gone

    recipe, root = load_recipe(write_recipe(tmp_path / "straight", tiny_base, tiny_task, training=training,
                                            **METHODS["lora"]))
    straight = write_candidate(train(recipe, root), recipe, root)
    weights = "adapter/adapter_model.safetensors"
    assert (tmp_path / "killed" / "v1" / weights).read_bytes() == (straight / weights).read_bytes()
    assert out.strip().endswith("v1")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_kill_during_the_version_write_leaves_no_version(sig, tmp_path, tiny_base, tiny_task):
    """A kill between writing the files and the rename. SIGTERM unwinds like Ctrl-C and cleans up;
    after SIGKILL (nothing runs) only a hidden staging directory remains. Never a vN."""
    path = write_recipe(tmp_path / "r", tiny_base, tiny_task, training={"max_steps": 1})
    code = (
        "import os, sys\n"
        "import gatekeeper.bundle.assembly as c\n"  # signs and publishes every bundle writer's staging dir
        "from gatekeeper.cli import main\n"
        f"c.sign_bundle = lambda staging: os.kill(os.getpid(), {int(sig)})\n"
        f"sys.exit(main(['train', {str(path)!r}, '-q']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    root = tmp_path / "r"
    assert existing_versions(root) == []
    staging = [p.name[:11] for p in root.iterdir() if p.is_dir()]
    if sig == signal.SIGTERM:
        assert done.returncode == 130 and done.stderr.strip().endswith("gatekeeper: interrupted"), done.stderr
        assert staging == []
    else:
        assert done.returncode == -signal.SIGKILL, done.stderr
        assert staging == [".v-staging-"]
    recipe, _ = load_recipe(path)
    assert write_candidate(train(recipe, root), recipe, root).name == "v1"  # and the next run is v1
