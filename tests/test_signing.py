"""Signed bundles: a flipped byte anywhere is caught and the file named."""

import base64
import json

from gatekeeper.bundle.signing import config_dir, verify_signature
from gatekeeper.cli import main
from tests.conftest import edit_manifest


def _flip(path, offset=None):
    data = bytearray(path.read_bytes())
    offset = len(data) // 2 if offset is None else offset
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _artifacts(bundle):
    return sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())


def test_trained_bundles_are_signed_by_the_users_key(tiny_bundle, capsys):
    status = verify_signature(tiny_bundle)
    assert status.ok, status.detail
    assert (config_dir() / "signing_key.pem").stat().st_mode & 0o077 == 0  # private key readable by owner only
    assert main(["verify", str(tiny_bundle)]) == 0
    assert "artifact hashes match" in capsys.readouterr().out


def test_a_flipped_byte_in_any_artifact_fails_verify_and_check_naming_the_file(bundle_copy, tmp_path, capsys):
    for name in _artifacts(bundle_copy):
        if name == "signature.json":
            continue
        target = bundle_copy / name
        original = target.read_bytes()
        # flip a byte of the YAML inside a value, so it still parses
        _flip(target, original.index(b"sha256: ") + 10 if name == "bundle.yaml" else None)
        for command in (["verify", str(bundle_copy)], ["check", str(bundle_copy), "--out", str(tmp_path / "r"), "-q"]):
            assert main(command) == 2, (name, command[0])
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and name.split("/")[-1] in err[0], (name, err)
        assert not (tmp_path / "r").exists()
        target.write_bytes(original)
    assert main(["verify", str(bundle_copy)]) == 0


def test_a_forged_signature_fails(bundle_copy, capsys):
    path = bundle_copy / "signature.json"
    document = json.loads(path.read_text())
    raw = bytearray(base64.b64decode(document["signature"]))
    raw[0] ^= 0xFF
    document["signature"] = base64.b64encode(bytes(raw)).decode()
    path.write_text(json.dumps(document))
    assert main(["verify", str(bundle_copy)]) == 2
    assert "signature does not match bundle.yaml" in capsys.readouterr().err


def test_a_key_that_is_not_trusted_is_refused(bundle_copy, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("GATEKEEPER_CONFIG_DIR", str(tmp_path / "someone-else"))
    assert main(["verify", str(bundle_copy)]) == 2
    assert "not trusted" in capsys.readouterr().err


def test_unsigned_bundles_need_an_explicit_flag(bundle_copy, tmp_path, capsys):
    (bundle_copy / "signature.json").unlink()
    assert main(["check", str(bundle_copy), "--out", str(tmp_path / "a"), "-q"]) == 2
    assert "not signed" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert main(["check", str(bundle_copy), "--out", str(tmp_path / "b"), "-q", "--allow-unsigned"]) == 0
    assert json.loads((tmp_path / "b" / "verdict.json").read_text())["bundle"]["signature"] == "unsigned"


def test_an_edit_without_re_signing_is_caught(bundle_copy, capsys):
    edit_manifest(bundle_copy, lambda d: d["gates"][0]["params"].update(min_rate=0.5), resign=False)
    assert main(["verify", str(bundle_copy)]) == 2
    assert "changed after signing" in capsys.readouterr().err
