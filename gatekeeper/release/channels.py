"""promote, rollback and history: moving verified, passing versions through release channels."""

from __future__ import annotations

from pathlib import Path

from gatekeeper._util.hashing import sha256_file
from gatekeeper.bundle.loading import LoadedBundle
from gatekeeper.bundle.signing import load_verified
from gatekeeper.errors import BundleError
from gatekeeper.release.policy import load_policy
from gatekeeper.release.restore import drill
from gatekeeper.release.store import Lineage, PolicyUse, VersionStore, VersionStoreError, store_for


def _verified(path: Path) -> tuple[LoadedBundle, str]:
    """Every artifact hash and the signature, or one line naming what is wrong."""
    bundle, status = load_verified(path)
    return bundle, str(status)


def _register(store: VersionStore, bundle: LoadedBundle, signature: str) -> None:
    """The version, and how it was made: its method, and the parent it was trained from (a dpo child)."""
    manifest = bundle.manifest
    parent = (bundle.training_record or {}).get("parent")
    lineage = Lineage(parent.get("name"), parent.get("version"), parent.get("manifest_sha256")) if isinstance(parent, dict) else None
    store.register(manifest.name, manifest.version, bundle.root.resolve(), bundle.manifest_sha256, signature,
                   manifest.adapter.method, lineage)


def record_check(bundle: LoadedBundle, signature: str, verdict_path: Path, passed: bool, exit_code: int,
                 replay_path: Path | None = None) -> Path:
    """Register the version, its verdict and its replay record; returns the store file."""
    path = store_for(bundle.root)
    manifest = bundle.manifest
    with VersionStore(path) as store:
        _register(store, bundle, signature)
        store.record_verdict(manifest.name, manifest.version, bundle.manifest_sha256, sha256_file(verdict_path),
                                passed, exit_code, verdict_path.resolve())
        if replay_path is not None:
            store.record_replay(manifest.name, manifest.version, bundle.manifest_sha256, replay_path.resolve(),
                                   sha256_file(replay_path))
    return path


def registered_replay(bundle: LoadedBundle) -> Path | None:
    """This bundle's replay record, when the store vouches for it as it is on disk now."""
    path = store_for(bundle.root)
    if not path.is_file():
        return None
    manifest = bundle.manifest
    with VersionStore(path) as store:
        known = store.latest_replay(manifest.name, manifest.version, bundle.manifest_sha256)
    if known is None or not Path(known["path"]).is_file() or sha256_file(Path(known["path"])) != known["sha256"]:
        return None
    return Path(known["path"])


def promote(path: Path, channel: str) -> str:
    bundle, signature = _verified(path)
    name, version = bundle.manifest.name, bundle.manifest.version
    location = store_for(bundle.root)
    policy = load_policy(location)  # adapters/policy.yaml: a malformed one is refused before anything is written
    if policy is not None:
        policy.check(bundle, channel)  # the signed data declaration against the channel's rules
    used = PolicyUse(policy.path, policy.sha256) if policy is not None else None
    under = f"; under {policy.path.name} sha256 {policy.sha256[:12]}" if policy is not None else ""
    if channel == "production" and not location.is_file():  # refused before anything is created
        raise VersionStoreError(f"{name} v{version} has no verdict: run `gatekeeper check {path}` first")
    with VersionStore(location) as store:
        if channel == "production":  # every refusal before the first write: a refused promote changes nothing
            verdict = store.latest_verdict(name, version)
            if verdict is None:
                raise VersionStoreError(f"{name} v{version} has no verdict: run `gatekeeper check {path}` first")
            if verdict["manifest_sha256"] != bundle.manifest_sha256:
                raise VersionStoreError(f"{name} v{version}: its latest verdict was for a different bundle.yaml; check it again")
            if not verdict["passed"]:
                raise VersionStoreError(f"{name} v{version}: latest verdict failed (exit code {verdict['exit_code']}); refusing to promote")
            _register(store, bundle, signature)
            previous = store.set_production(name, version, "promote", used)
            was = f" (v{previous} archived)" if previous and previous != version else ""
            return f"{name} v{version} is now production{was}{under}"
        _register(store, bundle, signature)
        store.set_channel(name, version, channel, used)
        return f"{name} v{version} is now {channel}{under}"


def rollback(name: str, version: int, store_path: Path, *, replay: bool = True, device: str | None = None) -> str:
    """Restore an earlier production version, after the restore drill proves it is the version that was checked."""
    with VersionStore(store_path, create=False) as store:
        row = store.version(name, version)
        if not any(e["version"] == version and e["channel_to"] == "production" for e in store.events(name)):
            raise VersionStoreError(f"{name} v{version} was never in production; rollback restores an earlier production version")
        bundle, _ = _verified(Path(row.path))  # hashes and signature first: seconds, before any model loads
        if bundle.manifest_sha256 != row.manifest_sha256:
            raise BundleError(f"{row.path}: bundle.yaml differs from the one registered for v{version}")
        result = drill(store, name, version, device=device, replay=replay)
        if not result.ok:
            raise BundleError(f"{name} v{version} does not restore: {result.problems[0]}")
        previous = store.set_production(name, version, "rollback")
    done = f"{name} rolled back to v{version}" + (f" (v{previous} archived)" if previous else "")
    if result.replayed:
        return done + f"; {result.replayed} recorded outputs replayed identically"
    return done + (f"; {result.note}" if result.note else "")
