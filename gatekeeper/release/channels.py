"""promote, rollback and history: moving verified, passing versions through release channels."""

from __future__ import annotations

from pathlib import Path

from gatekeeper.bundle.manifest import LoadedBundle, load_bundle
from gatekeeper.errors import BundleError
from gatekeeper._util.hashing import sha256_file
from gatekeeper.bundle.signing import verify_signature
from gatekeeper.release.store import Registry, RegistryError, registry_for


def _verified(path: Path) -> tuple[LoadedBundle, str]:
    """Every artifact hash and the signature, or one line naming what is wrong."""
    bundle = load_bundle(path)
    status = verify_signature(bundle.root)
    if not status.ok:
        raise BundleError(status.detail)
    return bundle, str(status)


def record_check(bundle: LoadedBundle, signature: str, verdict_path: Path, passed: bool, exit_code: int,
                 replay_path: Path | None = None) -> Path:
    """Register the version, its verdict and its replay record; returns the registry file."""
    path = registry_for(bundle.root)
    manifest = bundle.manifest
    with Registry(path) as registry:
        registry.register(manifest.name, manifest.version, bundle.root.resolve(), bundle.manifest_sha256, signature)
        registry.record_verdict(manifest.name, manifest.version, bundle.manifest_sha256, sha256_file(verdict_path),
                                passed, exit_code, verdict_path.resolve())
        if replay_path is not None:
            registry.record_replay(manifest.name, manifest.version, bundle.manifest_sha256, replay_path.resolve(),
                                   sha256_file(replay_path))
    return path


def registered_replay(bundle: LoadedBundle) -> Path | None:
    """This bundle's replay record, when the registry vouches for it as it is on disk now."""
    path = registry_for(bundle.root)
    if not path.is_file():
        return None
    manifest = bundle.manifest
    with Registry(path) as registry:
        known = registry.latest_replay(manifest.name, manifest.version, bundle.manifest_sha256)
    if known is None or not Path(known["path"]).is_file() or sha256_file(Path(known["path"])) != known["sha256"]:
        return None
    return Path(known["path"])


def promote(path: Path, channel: str) -> str:
    bundle, signature = _verified(path)
    name, version = bundle.manifest.name, bundle.manifest.version
    with Registry(registry_for(bundle.root)) as registry:
        registry.register(name, version, bundle.root.resolve(), bundle.manifest_sha256, signature)
        if channel == "production":
            verdict = registry.latest_verdict(name, version)
            if verdict is None:
                raise RegistryError(f"{name} v{version} has no verdict: run `gatekeeper check {path}` first")
            if verdict["manifest_sha256"] != bundle.manifest_sha256:
                raise RegistryError(f"{name} v{version}: its latest verdict was for a different bundle.yaml; check it again")
            if not verdict["passed"]:
                raise RegistryError(f"{name} v{version}: latest verdict failed (exit code {verdict['exit_code']}); refusing to promote")
            previous = registry.set_production(name, version, "promote")
            was = f" (v{previous} archived)" if previous and previous != version else ""
            return f"{name} v{version} is now production{was}"
        registry.set_channel(name, version, channel)
        return f"{name} v{version} is now {channel}"


def rollback(name: str, version: int, registry_path: Path, *, replay: bool = True, device: str | None = None) -> str:
    """Restore an earlier production version, after the restore drill proves it is the version that was checked."""
    from gatekeeper.release.restore import drill

    if not registry_path.is_file():
        raise RegistryError(f"no registry at {registry_path}")
    with Registry(registry_path) as registry:
        row = registry.version(name, version)
        if not any(e["version"] == version and e["channel_to"] == "production" for e in registry.events(name)):
            raise RegistryError(f"{name} v{version} was never in production; rollback restores an earlier production version")
        bundle, _ = _verified(Path(row.path))  # hashes and signature first: seconds, before any model loads
        if bundle.manifest_sha256 != row.manifest_sha256:
            raise BundleError(f"{row.path}: bundle.yaml differs from the one registered for v{version}")
        result = drill(registry, name, version, device=device, replay=replay)
        if not result.ok:
            raise BundleError(f"{name} v{version} does not restore: {result.problems[0]}")
        previous = registry.set_production(name, version, "rollback")
    done = f"{name} rolled back to v{version}" + (f" (v{previous} archived)" if previous else "")
    if result.replayed:
        return done + f"; {result.replayed} recorded outputs replayed identically"
    return done + (f"; {result.note}" if result.note else "")
