"""The release policy: per channel, rules a version's declared data provenance must keep to enter it.

One YAML file beside the version store, ``<adapters>/policy.yaml``::

    production:
      customer_data: false
      allowed_licences: [apache-2.0, cc-by-4.0]
      require_declared: true

Each channel (``candidate``, ``production``, ``archived``) takes the rules of
``gatekeeper.bundle.provenance.DataRules``, the same ones the ``dataset_audit``
gate takes as parameters, judged against the bundle's signed ``provenance``.
``promote`` reads the policy before it writes anything: a malformed file or a
version that breaks its channel's rules is one line, and the store is left
as it was. When a promote goes through, the policy's path and sha256 are
recorded in the store with the promote's event, so what was in force is
versioned with the change it allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gatekeeper._util.documents import Document, read_yaml, validated
from gatekeeper._util.hashing import sha256_file
from gatekeeper.bundle.loading import LoadedBundle
from gatekeeper.bundle.provenance import DataRules, breaches, judged_sets
from gatekeeper.errors import GatekeeperError

POLICY_FILE = "policy.yaml"
POLICY_SCHEMA_VERSION = 1


class PolicyError(GatekeeperError):
    pass


class ReleasePolicy(Document):
    schema_version: Literal[1] = POLICY_SCHEMA_VERSION
    candidate: DataRules | None = None
    production: DataRules | None = None
    archived: DataRules | None = None

    def rules(self, channel: str) -> DataRules | None:
        return getattr(self, channel, None)


@dataclass(frozen=True)
class LoadedPolicy:
    path: Path
    sha256: str
    policy: ReleasePolicy

    def check(self, bundle: LoadedBundle, channel: str) -> None:
        """Refuse, in one line naming the set and the rule, a version whose declaration breaks ``channel``'s rules.

        Sets the rules name that the bundle does not have are not judged: one policy covers many adapters.
        """
        rules = self.policy.rules(channel)
        if rules is None:
            return
        manifest = bundle.manifest
        judged = [name for name in judged_sets(rules, manifest.golden_sets) if name in manifest.golden_sets]
        found = breaches(manifest.provenance, judged, rules)
        if found:
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            raise PolicyError(f"{manifest.name} v{manifest.version} breaks the {channel} policy {self.path}: "
                              f"{found[0]}{more}")


def policy_path(store_path: Path) -> Path:
    """adapters/versions.sqlite -> adapters/policy.yaml"""
    return Path(store_path).parent / POLICY_FILE


def load_policy(store_path: Path) -> LoadedPolicy | None:
    """The policy beside the store at ``store_path``, validated; None where there is none."""
    path = policy_path(store_path)
    if not path.exists() and not path.is_symlink():
        return None
    policy = validated(ReleasePolicy, read_yaml(path, PolicyError, "release policy"), path, PolicyError)
    return LoadedPolicy(path, sha256_file(path), policy)
