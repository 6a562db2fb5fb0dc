"""A refused promote, rollback or sweep leaves every file exactly as it found it.

Each test snapshots the whole working tree (every path and its bytes, the version store
included) before the refused command and compares after: a store that was created, a
version registered, a channel moved, an event logged or a half-trained bundle left behind
all show up as a difference.
"""

import hashlib
from pathlib import Path

import pytest

from gatekeeper.cli import main
from tests.conftest import edit_manifest, two_tiny_versions, write_recipe


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def _refused(capsys, root: Path, *argv: str) -> str:
    """Run a command that must be refused; returns its one line after checking nothing changed."""
    before = _tree(root)
    assert main(list(argv)) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("gatekeeper: error:"), captured.err
    after = _tree(root)
    assert after == before, {k: (before.get(k), after.get(k)) for k in before.keys() | after.keys()
                             if before.get(k) != after.get(k)}
    return captured.err


@pytest.fixture
def versions(tmp_path, tiny_base, tiny_task):
    return two_tiny_versions(tmp_path, tiny_base, tiny_task)


def test_promote_without_any_verdict_creates_no_store(versions, tmp_path, capsys):
    v1, _, store = versions
    assert "has no verdict" in _refused(capsys, tmp_path, "promote", str(v1), "--channel", "production")
    assert not store.exists()


def test_promote_refusals_with_a_store_change_nothing_in_it(versions, tmp_path, capsys):
    v1, v2, store = versions
    assert main(["check", str(v1), "--out", str(tmp_path / "r1"), "-q"]) == 0
    assert main(["promote", str(v1)]) == 0
    capsys.readouterr()
    # v2 unchecked: the store exists, but v2 must not be registered by the refusal
    assert "has no verdict" in _refused(capsys, tmp_path, "promote", str(v2))
    edit_manifest(v2, lambda d: d["gates"][0]["params"].update(min_rate=1.0))
    assert main(["check", str(v2), "--out", str(tmp_path / "r2"), "-q"]) == 1
    capsys.readouterr()
    assert "latest verdict failed" in _refused(capsys, tmp_path, "promote", str(v2))
    edit_manifest(v2, lambda d: d["gates"][0]["params"].update(min_rate=0.0))
    assert "different bundle.yaml" in _refused(capsys, tmp_path, "promote", str(v2))
    (v2 / "adapter" / "adapter_config.json").write_text("{}")  # tampered after its check
    assert "adapter/adapter_config.json" in _refused(capsys, tmp_path, "promote", str(v2))


def test_rollback_refusals_change_nothing(versions, tmp_path, capsys):
    v1, v2, store = versions
    for bundle in (v1, v2):
        assert main(["check", str(bundle), "--out", str(tmp_path / bundle.name), "-q"]) == 0
    assert main(["promote", str(v2)]) == 0
    capsys.readouterr()
    assert "never in production" in _refused(capsys, tmp_path, "rollback", "tiny", "--to", "v1", "--store", str(store))
    assert "v7" in _refused(capsys, tmp_path, "rollback", "tiny", "--to", "v7", "--store", str(store))
    assert "nope" in _refused(capsys, tmp_path, "rollback", "nope", "--to", "v1", "--store", str(store))
    missing = tmp_path / "elsewhere" / "versions.sqlite"
    assert str(missing) in _refused(capsys, tmp_path, "rollback", "tiny", "--to", "v1", "--store", str(missing))
    assert not missing.parent.exists()

    assert main(["promote", str(v1)]) == 0 and main(["promote", str(v2)]) == 0  # v1 was production once
    capsys.readouterr()
    weights = v1 / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + bytes([weights.read_bytes()[-1] ^ 1]))
    assert "adapter/adapter_model.safetensors" in _refused(
        capsys, tmp_path, "rollback", "tiny", "--to", "v1", "--store", str(store))


@pytest.mark.parametrize("argv, message", [
    (["--rank", "4,4"], "lists 4 twice"),
    (["--rank", "4,abc"], "positive whole numbers"),
])
def test_sweep_refusals_train_nothing_and_write_nothing(argv, message, tmp_path, tiny_base, tiny_task, capsys):
    recipe = write_recipe(tmp_path / "c", tiny_base, tiny_task)
    assert message in _refused(capsys, tmp_path, "sweep", str(recipe), *argv, "--out", str(tmp_path / "out"))


def test_promote_refused_by_the_channel_policy_changes_nothing(versions, tmp_path, capsys):
    v1, v2, store = versions
    assert main(["check", str(v1), "--out", str(tmp_path / "r1"), "-q"]) == 0
    assert main(["promote", str(v1), "--channel", "candidate"]) == 0
    capsys.readouterr()
    policy = tmp_path / "adapters" / "policy.yaml"
    policy.write_text("production:\n  customer_data: false\n")
    # the tiny versions declare nothing: customer_data: false asks for a declaration
    assert "set 'train' does not declare customer_data (rule customer_data: false)" in _refused(
        capsys, tmp_path, "promote", str(v1), "--channel", "production")
    edit_manifest(v1, lambda d: d.update(provenance={"train": {"customer_data": True}, "validation": {"customer_data": False}}))
    assert "set 'train' declares customer data (rule customer_data: false)" in _refused(
        capsys, tmp_path, "promote", str(v1))


def test_promote_refused_by_the_policy_creates_no_store(versions, tmp_path, capsys):
    v1, _, store = versions
    (tmp_path / "adapters" / "policy.yaml").write_text("candidate:\n  allowed_licences: [mit]\n")
    assert "set 'train' declares no licence (rule allowed_licences: [mit])" in _refused(
        capsys, tmp_path, "promote", str(v1), "--channel", "candidate")
    assert not store.exists()


@pytest.mark.parametrize("text, message", [
    ("prod:\n  customer_data: false\n", "unknown key 'prod'"),
    ("production:\n  licences: [mit]\n", "unknown key 'production.licences'"),
    ("production:\n  customer_data: nope\n", "field 'production.customer_data'"),
    ("production:\n  allowed_licences: [not a licence]\n", "field 'production.allowed_licences.0'"),
    ("production: [customer_data]\n", "field 'production'"),
    ("production: {customer_data: false\n", "malformed YAML at line"),
    ("- production\n", "expected a mapping of fields"),
])
def test_a_malformed_policy_is_one_line_naming_the_file_and_field(text, message, versions, tmp_path, capsys):
    v1, _, store = versions
    assert main(["check", str(v1), "--out", str(tmp_path / "r1"), "-q"]) == 0
    capsys.readouterr()
    policy = tmp_path / "adapters" / "policy.yaml"
    policy.write_text(text)
    err = _refused(capsys, tmp_path, "promote", str(v1))
    assert f"{policy.resolve()}: " in err and message in err
