"""The documented CI pipelines use commands, options, exit codes and fixtures that exist."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

import gatekeeper.pytest_plugin as plugin
from gatekeeper.cli import build_parser
from gatekeeper.errors import ExitCode

DOCS = Path(__file__).resolve().parent.parent / "docs"
PIPELINES = sorted((DOCS / "ci").glob("*.yml"))


def shell_lines(pipeline: dict) -> list[str]:
    """Every shell line of a GitHub Actions workflow (steps' run) or a GitLab job (script)."""
    blocks = []
    for job in pipeline.get("jobs", {}).values():
        blocks += [step["run"] for step in job.get("steps", []) if "run" in step]
    for key, job in pipeline.items():
        if isinstance(job, dict) and "script" in job:
            blocks += job["script"]
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line, split at ||, && and ;."""
    found, current = [], []
    for token in shlex.split(line):
        if token in ("||", "&&", ";"):
            found, current = found + [current], []
        else:
            current.append(token)
    return [c for c in found + [current] if c]


def plugin_options() -> set[str]:
    class Recorder:  # stands in for pytest's parser: records the names the plugin registers
        def __init__(self):
            self.options: set[str] = set()

        def getgroup(self, *args, **kwargs):
            return self

        def addoption(self, *names, **kwargs):
            self.options.update(names)

    recorder = Recorder()
    plugin.pytest_addoption(recorder)
    return recorder.options


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_every_gatekeeper_and_pytest_command_parses(path):
    lines = shell_lines(yaml.safe_load(path.read_text()))
    gatekeeper = [c for line in lines for c in commands(line) if c[0].endswith("bin/gatekeeper")]
    pytests = [c for line in lines for c in commands(line) if c[:3] == [".venv/bin/python", "-m", "pytest"]]
    assert gatekeeper and pytests, f"{path.name} should wire both gatekeeper check and the pytest plugin"
    for argv in gatekeeper:
        build_parser().parse_args(argv[1:])  # exits (fails the test) on an unknown command or option
    known = plugin_options()
    for argv in pytests:
        used = {a for a in argv if a.startswith("--gatekeeper")}
        assert "--gatekeeper-bundle" in used and used <= known, f"unknown plugin options: {used - known}"
        assert "--junitxml" in argv  # what the CI system reads
    assert any(c[1] == "check" for c in gatekeeper)


def test_the_guide_states_every_exit_code_and_fixture():
    guide = (DOCS / "ci.md").read_text()
    for code in ExitCode:
        assert re.search(rf"^\| {int(code)} \|", guide, re.MULTILINE), f"exit code {int(code)} is not documented"
    documented = set(re.findall(r"^\| `(gatekeeper_\w+)` \|", guide, re.MULTILINE))
    assert documented == {"gatekeeper_verdict", "gatekeeper_bundle", "gatekeeper_reports"}
    assert all(callable(getattr(plugin, name)) for name in documented)
    assert plugin_options() == set(re.findall(r"^\| `(--gatekeeper-[\w-]+)", guide, re.MULTILINE))
