"""promote, rollback and history on two trained versions; kill-safety of the registry."""

import os
import sqlite3
import subprocess
import sys

import pytest

from gatekeeper.cli import main
from tests.conftest import edit_manifest, two_tiny_versions


@pytest.fixture
def two_versions(tmp_path, tiny_base, tiny_task):
    """adapters/tiny/v1 and v2, the way `gatekeeper train` lays them out."""
    return two_tiny_versions(tmp_path, tiny_base, tiny_task)


def _run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _production(registry):
    with sqlite3.connect(registry) as db:
        return db.execute("SELECT name, version FROM versions WHERE channel='production'").fetchall()


def _events(registry):
    with sqlite3.connect(registry) as db:
        return db.execute("SELECT version, action FROM events ORDER BY id").fetchall()


def test_promote_rollback_and_history(two_versions, tmp_path, capsys):
    v1, v2, registry = two_versions
    code, out = _run(capsys, "promote", str(v1), "--channel", "production")
    assert code == 2 and "has no verdict" in out

    assert _run(capsys, "check", str(v1), "--out", str(tmp_path / "r1"), "-q")[0] == 0
    code, out = _run(capsys, "promote", str(v1), "--channel", "production")
    assert code == 0 and "v1 is now production" in out

    edit_manifest(v2, lambda d: d["gates"][0]["params"].update(min_rate=1.0))  # a candidate that fails
    assert _run(capsys, "check", str(v2), "--out", str(tmp_path / "r2"), "-q")[0] == 1
    code, out = _run(capsys, "promote", str(v2), "--channel", "production")
    assert code == 2 and "latest verdict failed" in out
    assert _production(registry) == [("tiny", 1)]

    edit_manifest(v2, lambda d: d["gates"][0]["params"].update(min_rate=0.0))
    code, out = _run(capsys, "promote", str(v2), "--channel", "production")
    assert code == 2 and "different bundle.yaml" in out  # the verdict was for the failing manifest
    assert _run(capsys, "check", str(v2), "--out", str(tmp_path / "r3"), "-q")[0] == 0
    code, out = _run(capsys, "promote", str(v2), "--channel", "production")
    assert code == 0 and "v2 is now production (v1 archived)" in out
    assert _production(registry) == [("tiny", 2)]

    code, out = _run(capsys, "rollback", "tiny", "--to", "v1", "--store", str(registry))
    assert code == 0 and "rolled back to v1" in out
    assert _production(registry) == [("tiny", 1)]

    code, out = _run(capsys, "history", "tiny", "--store", str(registry))
    assert code == 0
    for expected in ("v1", "v2", "production", "archived", "promote", "rollback", "fail (exit 1)"):
        assert expected in out


def test_rollback_to_a_tampered_version_names_the_file(two_versions, tmp_path, capsys):
    v1, v2, registry = two_versions
    for bundle in (v1, v2):
        assert _run(capsys, "check", str(bundle), "--out", str(tmp_path / bundle.name), "-q")[0] == 0
        assert _run(capsys, "promote", str(bundle))[0] == 0
    weights = v1 / "adapter" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    code, out = _run(capsys, "rollback", "tiny", "--to", "v1", "--store", str(registry))
    assert code == 2 and "adapter/adapter_model.safetensors" in out
    assert _production(registry) == [("tiny", 2)]


def test_rollback_refuses_a_version_never_in_production(two_versions, tmp_path, capsys):
    v1, v2, registry = two_versions
    assert _run(capsys, "check", str(v2), "--out", str(tmp_path / "r"), "-q")[0] == 0
    assert _run(capsys, "promote", str(v2))[0] == 0
    assert _run(capsys, "check", str(v1), "--out", str(tmp_path / "r1"), "-q")[0] == 0
    code, out = _run(capsys, "rollback", "tiny", "--to", "v1", "--store", str(registry))
    assert code == 2 and "never in production" in out


@pytest.mark.parametrize("crash_at", ["after_archive", "before_commit"])
@pytest.mark.parametrize("command", ["promote", "rollback"])
def test_a_kill_mid_change_leaves_the_registry_as_it_was(command, crash_at, two_versions, tmp_path, capsys):
    v1, v2, registry = two_versions
    for bundle in (v1, v2):
        assert _run(capsys, "check", str(bundle), "--out", str(tmp_path / bundle.name), "-q")[0] == 0
    assert _run(capsys, "promote", str(v1))[0] == 0
    if command == "rollback":
        assert _run(capsys, "promote", str(v2))[0] == 0
        argv = ["rollback", "tiny", "--to", "v1", "--store", str(registry)]
    else:
        argv = ["promote", str(v2)]
    before = (_production(registry), _events(registry))
    env = dict(os.environ, GATEKEEPER_CRASH_AT=crash_at)
    died = subprocess.run([sys.executable, "-m", "gatekeeper.cli", *argv], env=env, capture_output=True, timeout=120)
    assert died.returncode == 137
    assert (_production(registry), _events(registry)) == before
    # and the registry still works: the same command completes without the fault
    assert _run(capsys, *argv)[0] == 0
    assert _production(registry) != before[0]
