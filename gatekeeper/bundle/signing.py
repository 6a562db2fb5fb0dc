"""Ed25519 signatures over a bundle.

``bundle.yaml`` records the sha256 of every artifact (adapter weights,
golden sets, contract, recipe, training record), so signing the manifest's
own hash seals them all: change one byte anywhere and either a file hash or
the signature stops matching. The key pair is created on first use in the
user's config directory; a signature verifies only against a trusted key
(your own, or a public key placed in ``<config>/trusted_keys/``).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

from gatekeeper._util.files import write_atomic
from gatekeeper._util.hashing import canonical_json, sha256_bytes, sha256_file, user_dir
from gatekeeper.bundle.loading import LoadedBundle, load_bundle
from gatekeeper.errors import BundleError

SIGNATURE_FILE = "signature.json"
MANIFEST = "bundle.yaml"


def config_dir() -> Path:
    return user_dir("GATEKEEPER_CONFIG_DIR", "XDG_CONFIG_HOME", ".config")


def _raw_public(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: bytes) -> str:
    return sha256_bytes(public)[:16]


def signing_key():
    """The user's Ed25519 private key, created (mode 0600) on first use."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = config_dir() / "signing_key.pem"
    if path.is_file():
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_atomic(path, pem, mode=0o600)  # private before it exists under its name
    public = base64.b64encode(_raw_public(key)).decode()
    write_atomic(path.parent / "signing_key.pub", public + "\n")
    return key


def trusted_keys() -> dict[str, bytes]:
    """Key id -> raw public key: the user's own key and any in ``trusted_keys/*.pub``."""
    keys: dict[str, bytes] = {}
    own = config_dir() / "signing_key.pub"
    files = [own] if own.is_file() else []
    trusted_dir = config_dir() / "trusted_keys"
    if trusted_dir.is_dir():
        files += sorted(trusted_dir.glob("*.pub"))
    for path in files:
        raw = base64.b64decode(path.read_text().strip())
        keys[key_id(raw)] = raw
    return keys


def _payload(root: Path) -> bytes:
    return canonical_json({"manifest_sha256": sha256_file(root / MANIFEST)}).encode()


def sign_bundle(root: Path) -> str:
    """Write signature.json for the bundle at ``root``; returns the key id."""
    key = signing_key()
    public = _raw_public(key)
    document = {
        "algorithm": "ed25519",
        "key_id": key_id(public),
        "public_key": base64.b64encode(public).decode(),
        "manifest_sha256": sha256_file(root / MANIFEST),
        "signature": base64.b64encode(key.sign(_payload(root))).decode(),
    }
    (root / SIGNATURE_FILE).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return document["key_id"]


@dataclass(frozen=True)
class SignatureStatus:
    state: str  # valid | unsigned | invalid | untrusted
    key_id: str | None
    detail: str

    @property
    def ok(self) -> bool:
        return self.state == "valid"

    def __str__(self) -> str:
        return f"{self.state} (key {self.key_id})" if self.key_id else self.state


def verify_signature(root: Path) -> SignatureStatus:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    path = root / SIGNATURE_FILE
    if not path.is_file():
        return SignatureStatus("unsigned", None, f"{root}: bundle is not signed (no {SIGNATURE_FILE})")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        public = base64.b64decode(document["public_key"], validate=True)
        signature = base64.b64decode(document["signature"], validate=True)
        claimed = document["key_id"]
    except (ValueError, KeyError, TypeError):
        return SignatureStatus("invalid", None, f"{path}: malformed signature file")
    if key_id(public) != claimed:
        return SignatureStatus("invalid", claimed, f"{path}: key id does not match its public key")
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, _payload(root))
    except (InvalidSignature, ValueError):
        return SignatureStatus("invalid", claimed, f"{root}: signature does not match {MANIFEST} (it changed after signing)")
    if claimed not in trusted_keys():
        return SignatureStatus(
            "untrusted", claimed,
            f"{root}: signed by key {claimed}, which is not trusted (add it to {config_dir() / 'trusted_keys'})",
        )
    return SignatureStatus("valid", claimed, f"signed by trusted key {claimed}")


def load_verified(path: str | Path, *, allow_unsigned: bool = False) -> tuple[LoadedBundle, SignatureStatus]:
    """The bundle with every hash and its signature checked."""
    bundle = load_bundle(path)
    signature = verify_signature(bundle.root)
    if not signature.ok and not (allow_unsigned and signature.state == "unsigned"):
        hint = " (pass --allow-unsigned to check it anyway)" if signature.state == "unsigned" else ""
        raise BundleError(signature.detail + hint)
    return bundle, signature
