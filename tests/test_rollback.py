"""rollback gate and the restore drill: a restorable production version passes, a tampered one fails naming the file."""

import json
import sqlite3

import pytest

from gatekeeper._util.hashing import sha256_file
from gatekeeper.cli import main
from tests.conftest import edit_manifest, two_tiny_versions

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def versions(tmp_path, tiny_base, tiny_task):
    """adapters/tiny/v1 (checked, so it has a replay record) and v2, a candidate gated on rollback."""
    v1, v2, registry = two_tiny_versions(tmp_path, tiny_base, tiny_task)
    assert main(["check", str(v1), "--out", str(tmp_path / "reports" / "v1"), "-q"]) == 0
    edit_manifest(v2, lambda d: d.update(gates=[{"name": "rollback"}]))
    return v1, v2, registry


def _check(v2, out):
    code = main(["check", str(v2), "--out", str(out), "-q"])
    return code, json.loads((out / "verdict.json").read_text())["gates"][0]


def test_a_check_leaves_a_replay_record_the_registry_vouches_for(versions, tmp_path):
    _, _, registry = versions
    [record] = (tmp_path / "adapters" / "replays" / "tiny").glob("v1-*.jsonl")  # beside the registry, not the reports
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert lines[0]["name"] == "tiny" and lines[0]["version"] == 1 and lines[0]["runtime"]["side"] == "adapter"
    assert len(lines) == 17 and all(entry["output"] for entry in lines[1:])  # 16 prompts: the whole tiny eval set
    with sqlite3.connect(registry) as db:
        assert db.execute("SELECT path, sha256 FROM replays WHERE version=1").fetchall() == [
            (str(record.resolve()), sha256_file(record))]


def test_passes_with_a_note_when_nothing_is_in_production(versions, tmp_path):
    _, v2, _ = versions
    code, result = _check(v2, tmp_path / "r")
    assert code == 0 and result["status"] == "passed"
    assert "nothing to roll back to: tiny has no production version" in result["summary"]


def test_a_restorable_production_version_replays_identically(versions, tmp_path):
    v1, v2, _ = versions
    assert main(["promote", str(v1)]) == 0
    code, result = _check(v2, tmp_path / "r")
    assert code == 0 and result["status"] == "passed", result["summary"]
    assert result["summary"] == "v1 restores and replays 16 outputs identically"
    assert result["details"]["production"] == "tiny v1"
    assert any("signature valid" in line for line in result["details"]["verified"])


def test_a_tampered_adapter_file_fails_naming_it(versions, tmp_path):
    v1, v2, _ = versions
    assert main(["promote", str(v1)]) == 0
    weights = v1 / "adapter" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    code, result = _check(v2, tmp_path / "r")
    assert code == 1 and result["status"] == "failed"
    assert "hash mismatch for adapter/adapter_model.safetensors" in result["summary"]
    assert result["details"]["problems"] and result["metrics"][0]["adapter"] == 1


def test_outputs_that_do_not_replay_fail_with_the_diff(versions, tmp_path):
    """A record whose outputs the version cannot reproduce (here: one answer rewritten, hash re-registered)."""
    v1, v2, registry = versions
    assert main(["promote", str(v1)]) == 0
    [record] = (tmp_path / "adapters" / "replays" / "tiny").glob("v1-*.jsonl")
    lines = record.read_text().splitlines()
    entry = json.loads(lines[3])
    entry["output"] = "not what v1 says"
    lines[3] = json.dumps(entry, sort_keys=True)
    record.write_text("\n".join(lines) + "\n")
    code, result = _check(v2, tmp_path / "stale-hash")
    assert code == 1 and f"hash mismatch for {record.name}" in result["summary"]

    with sqlite3.connect(registry) as db:
        db.execute("UPDATE replays SET sha256=?", (sha256_file(record),))
    code, result = _check(v2, tmp_path / "r")
    assert code == 1 and f"1 of 16 replayed outputs differ from {record.name}" in result["summary"]
    shown = result["evidence"][0]
    assert shown["id"] == entry["id"] and shown["base_output"] == "not what v1 says" and shown["adapter_output"]


def test_the_rollback_command_runs_the_same_drill(versions, tmp_path, capsys):
    v1, v2, registry = versions
    assert main(["check", str(v2), "--out", str(tmp_path / "r2"), "-q"]) == 0
    for bundle in (v1, v2):
        assert main(["promote", str(bundle)]) == 0
    capsys.readouterr()
    assert main(["rollback", "tiny", "--to", "v1", "--store", str(registry)]) == 0
    assert "rolled back to v1 (v2 archived); 16 recorded outputs replayed identically" in capsys.readouterr().out


def test_a_registry_that_is_not_there_is_bad_input(bundle_copy, tmp_path, capsys):
    edit_manifest(bundle_copy, lambda d: d.update(gates=[{"name": "rollback", "params": {"store": str(tmp_path / "no.sqlite")}}]))
    assert main(["check", str(bundle_copy), "--out", str(tmp_path / "r"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0] and not (tmp_path / "r").exists()
