"""Where a verdict lives on disk, and reading one back from a report directory, a file or a bundle."""

from __future__ import annotations

from pathlib import Path

import pydantic

from gatekeeper._util.documents import read_text, validation_problem
from gatekeeper.bundle.manifest import MANIFEST, Bundle, read_manifest
from gatekeeper.errors import VerdictError
from gatekeeper.verdict.model import Verdict

VERDICT_FILE = "verdict.json"


def default_report_dir(manifest: Bundle) -> Path:
    """Where ``gatekeeper check`` writes a bundle's reports unless told otherwise."""
    return Path("reports") / manifest.name / f"v{manifest.version}"


def load_verdict(path: Path) -> Verdict:
    return Verdict.model_validate_json(read_text(path, VerdictError, "verdict"))


def read_verdict(path: str | Path) -> Verdict:
    """A verdict from a verdict.json, a report directory or a checked bundle; VerdictError otherwise."""
    given = Path(path)
    if given.is_dir():
        if (given / VERDICT_FILE).is_file():
            given = given / VERDICT_FILE
        elif (given / MANIFEST).is_file():
            manifest = read_manifest(given)
            report = default_report_dir(manifest) / VERDICT_FILE
            if not report.is_file():
                raise VerdictError(
                    f"{path}: bundle {manifest.name} v{manifest.version} has no report at {report}; "
                    f"run `gatekeeper check {path}` first"
                )
            given = report
        else:
            raise VerdictError(f"{path}: neither a report directory (no verdict.json) nor a bundle (no {MANIFEST})")
    if not given.is_file():
        raise VerdictError(f"{path}: no such file or directory")
    try:
        return load_verdict(given)
    except pydantic.ValidationError as exc:
        raise VerdictError(f"{path}: not a gatekeeper verdict ({validation_problem(exc)})") from None
