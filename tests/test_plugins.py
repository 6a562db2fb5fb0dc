"""A real, separately installed gate package is found through the gatekeeper.gates entry points."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import edit_manifest

FIXTURE = Path(__file__).parent / "fixtures" / "extra_gate"


def test_third_party_gate_installs_lists_and_runs(tmp_path, bundle_copy):
    site, source = tmp_path / "site", tmp_path / "extra_gate"
    shutil.copytree(FIXTURE, source)  # pip builds in place; keep the repository clean
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    gatekeeper = [sys.executable, "-m", "gatekeeper.cli"]
    listed = subprocess.run([*gatekeeper, "gates", "list"], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "extra/short_answers" in listed.stdout

    edit_manifest(bundle_copy, lambda d: d.update(gates=[{"name": "extra/short_answers", "params": {"max_chars": 1}}]))
    checked = subprocess.run([*gatekeeper, "check", str(bundle_copy), "--out", str(tmp_path / "r"), "-q"],
                             env=env, capture_output=True, text=True, timeout=300)
    assert checked.returncode == 1, checked.stderr  # every answer is longer than one character
    assert '"name": "extra/short_answers"' in (tmp_path / "r" / "verdict.json").read_text()
