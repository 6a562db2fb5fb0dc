"""A real, separately installed gate package is found through the gatekeeper.gates entry points."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import edit_manifest

FIXTURES = Path(__file__).parent / "fixtures"
GATEKEEPER = [sys.executable, "-m", "gatekeeper.cli"]


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """Both fixture packages installed side by side: a working gate and one whose module fails to import."""
    root = tmp_path_factory.mktemp("plugins")
    site = root / "site"
    for name in ("extra_gate", "broken_gate"):
        source = root / name
        shutil.copytree(FIXTURES / name, source)  # pip builds in place; keep the repository clean
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
             "--target", str(site), str(source)],
            check=True, capture_output=True, timeout=300,
        )
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))


def test_a_broken_gate_package_is_named_and_skipped_and_listing_still_works(plugin_env):
    listed = subprocess.run([*GATEKEEPER, "gates", "list"], env=plugin_env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "extra/short_answers" in listed.stdout and "json_parse" in listed.stdout
    [warning] = listed.stderr.strip().splitlines()
    assert "broken/needs_missing_dependency" in warning and "a_dependency_nobody_installed" in warning


def test_a_bundle_naming_the_broken_gate_is_bad_input_before_any_model(plugin_env, bundle_copy, tmp_path):
    edit_manifest(bundle_copy, lambda d: d.update(gates=[{"name": "broken/needs_missing_dependency"}]))
    checked = subprocess.run([*GATEKEEPER, "check", str(bundle_copy), "--out", str(tmp_path / "r"), "-q"],
                             env=plugin_env, capture_output=True, text=True, timeout=120)
    assert checked.returncode == 2
    error = [line for line in checked.stderr.splitlines() if "error" in line]
    assert len(error) == 1 and "broken/needs_missing_dependency" in error[0] and "cannot be used" in error[0]
    assert not (tmp_path / "r").exists()


def test_third_party_gate_installs_lists_and_runs(tmp_path, bundle_copy, plugin_env):
    env, gatekeeper = plugin_env, GATEKEEPER
    listed = subprocess.run([*gatekeeper, "gates", "list"], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "extra/short_answers" in listed.stdout

    edit_manifest(bundle_copy, lambda d: d.update(gates=[{"name": "extra/short_answers", "params": {"max_chars": 1}}]))
    checked = subprocess.run([*gatekeeper, "check", str(bundle_copy), "--out", str(tmp_path / "r"), "-q"],
                             env=env, capture_output=True, text=True, timeout=300)
    assert checked.returncode == 1, checked.stderr  # every answer is longer than one character
    assert '"name": "extra/short_answers"' in (tmp_path / "r" / "verdict.json").read_text()
