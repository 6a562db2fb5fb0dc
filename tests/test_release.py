"""promote, rollback and history on two trained versions; kill-safety of the registry."""

import hashlib
import os
import sqlite3
import subprocess
import sys

import pytest
import yaml

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


CLEAN = {"source": "written for the tests by conftest.tiny_items", "licence": "cc-by-4.0", "customer_data": False}
POLICY = "production:\n  customer_data: false\n  allowed_licences: [apache-2.0, cc-by-4.0]\n"


def _policies(registry):
    with sqlite3.connect(registry) as db:
        return db.execute("SELECT e.version, e.action, p.channel, p.path, p.sha256 FROM policies p"
                          " JOIN events e ON e.id = p.event_id ORDER BY p.id").fetchall()


@pytest.fixture
def declared_versions(tmp_path, tiny_base, tiny_task):
    """v1 and v2 trained from a recipe that declares its training sets' provenance."""
    return two_tiny_versions(tmp_path, tiny_base, tiny_task, provenance={"train": CLEAN, "validation": CLEAN})


def test_the_recipe_declaration_reaches_bundle_yaml_and_its_signature(declared_versions):
    v1, _, _ = declared_versions
    manifest = yaml.safe_load((v1 / "bundle.yaml").read_text())
    assert manifest["provenance"] == {"train": CLEAN, "validation": CLEAN}
    recipe = yaml.safe_load((v1 / "recipe.yaml").read_text())
    assert recipe["data"]["provenance"] == {"train": CLEAN, "validation": CLEAN}
    from gatekeeper.bundle.signing import load_verified
    from gatekeeper.errors import BundleError

    load_verified(v1)
    edit_manifest(v1, lambda d: d["provenance"]["train"].update(customer_data=True), resign=False)
    with pytest.raises(BundleError, match="signature"):
        load_verified(v1)


def test_promote_refuses_a_declaration_the_channel_policy_forbids(declared_versions, tmp_path, capsys):
    v1, v2, registry = declared_versions
    policy = tmp_path / "adapters" / "policy.yaml"
    policy.write_text(POLICY)
    edit_manifest(v2, lambda d: d["provenance"]["train"].update(customer_data=True))
    for bundle in (v1, v2):
        assert _run(capsys, "check", str(bundle), "--out", str(tmp_path / bundle.name), "-q")[0] == 0
    assert _run(capsys, "promote", str(v1))[0] == 0
    before = (_production(registry), _events(registry), _policies(registry))

    code, out = _run(capsys, "promote", str(v2), "--channel", "production")
    assert code == 2 and out.count("\n") == 1
    assert f"tiny v2 breaks the production policy {policy}: set 'train' declares customer data " \
           "(rule customer_data: false)" in out
    edit_manifest(v2, lambda d: d["provenance"]["train"].pop("licence"))
    assert _run(capsys, "check", str(v2), "--out", str(tmp_path / "v2-again"), "-q")[0] == 0
    code, out = _run(capsys, "promote", str(v2))
    assert code == 2 and "set 'train' declares no licence (rule allowed_licences: [apache-2.0, cc-by-4.0])" in out
    assert (_production(registry), _events(registry), _policies(registry)) == before

    # the other channels have no rules in this policy; a clean declaration enters production
    edit_manifest(v2, lambda d: d["provenance"].update(train=CLEAN))
    assert _run(capsys, "check", str(v2), "--out", str(tmp_path / "v2-clean"), "-q")[0] == 0
    code, out = _run(capsys, "promote", str(v2))
    assert code == 0 and "v2 is now production (v1 archived)" in out
    assert _production(registry) == [("tiny", 2)]


def test_the_policy_sha256_is_recorded_with_the_promote(declared_versions, tmp_path, capsys):
    v1, v2, registry = declared_versions
    policy = tmp_path / "adapters" / "policy.yaml"
    policy.write_text(POLICY)
    digest = hashlib.sha256(policy.read_bytes()).hexdigest()
    assert _run(capsys, "check", str(v1), "--out", str(tmp_path / "r1"), "-q")[0] == 0
    code, out = _run(capsys, "promote", str(v1))
    assert code == 0 and f"under policy.yaml sha256 {digest[:12]}" in out
    assert _policies(registry) == [(1, "promote", "production", str(policy.resolve()), digest)]

    policy.write_text(POLICY + "candidate:\n  require_declared: false\n")  # a new version of the policy
    code, out = _run(capsys, "promote", str(v2), "--channel", "candidate")
    assert code == 0
    assert _policies(registry)[1] == (2, "set candidate", "candidate", str(policy.resolve()),
                                      hashlib.sha256(policy.read_bytes()).hexdigest())
    from gatekeeper.release.store import VersionStore

    with VersionStore(registry, create=False) as store:
        assert [(p["version"], p["sha256"]) for p in store.policies("tiny")][0] == (1, digest)
    policy.unlink()  # no policy: nothing is recorded, promote works as before
    assert _run(capsys, "promote", str(v1))[0] == 0 and len(_policies(registry)) == 2


def test_a_kill_mid_promote_records_no_policy(declared_versions, tmp_path, capsys):
    v1, _, registry = declared_versions
    (tmp_path / "adapters" / "policy.yaml").write_text(POLICY)
    assert _run(capsys, "check", str(v1), "--out", str(tmp_path / "r1"), "-q")[0] == 0
    env = dict(os.environ, GATEKEEPER_CRASH_AT="before_commit")
    died = subprocess.run([sys.executable, "-m", "gatekeeper.cli", "promote", str(v1)], env=env, capture_output=True,
                          timeout=120)
    assert died.returncode == 137
    assert _policies(registry) == [] and _production(registry) == []
    assert _run(capsys, "promote", str(v1))[0] == 0 and len(_policies(registry)) == 1
