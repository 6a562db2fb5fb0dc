"""pytest plugin: ``pytest --gatekeeper-bundle PATH`` makes each of the bundle's gates a test.

The gates run once per session, on first need, exactly as ``gatekeeper check``
runs them (same preparation, cache and reports); each gate then becomes a
test that passes or fails with its rule, base and adapter values and worst
examples, so CI shows one result per gate. Fixtures hand the verdict and the
bundle to your own tests::

    from gatekeeper.verdict.assertions import assert_gate

    def test_accuracy(gatekeeper_verdict):
        assert gatekeeper_verdict.gate("task_accuracy").delta >= 0.10
        assert_gate(gatekeeper_verdict, "json_parse", min_adapter=0.98)

pytest loads this module (entry point ``pytest11``) in every run of every
project where gatekeeper is installed, so importing it stays cheap: gatekeeper
modules, and torch with them, load only once a bundle is given.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gatekeeper.verdict.assertions import GateAssertionError, gate_message


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gatekeeper", "gatekeeper: gate a fine-tuned adapter")
    group.addoption("--gatekeeper-bundle", metavar="PATH",
                    help="bundle directory whose gates run once and become one test each")
    group.addoption("--gatekeeper-report-dir", metavar="DIR",
                    help="where verdict.json, junit.xml and report.html go (default: reports/<name>/v<N>)")
    group.addoption("--gatekeeper-allow-unsigned", action="store_true",
                    help="accept a bundle that carries no signature")
    group.addoption("--gatekeeper-device", metavar="DEVICE", help="override the bundle's serving device (cpu, cuda)")
    group.addoption("--gatekeeper-no-cache", action="store_true", help="ignore cached responses and run the model")


class GatekeeperRun:
    """One check of one bundle per session: prepared at collection, run by the first test that needs it."""

    def __init__(self, config: pytest.Config):
        # Tests may chdir; paths keep meaning what they meant on the command line.
        self.here = config.invocation_params.dir
        given = (self.here / config.getoption("gatekeeper_bundle")).resolve()
        self.bundle_path = given.parent if given.name == "bundle.yaml" else given  # the directory or its manifest
        self.manifest_path = self.bundle_path / "bundle.yaml"
        report_dir = config.getoption("gatekeeper_report_dir")
        self.report_dir = self.here / report_dir if report_dir else None
        self.allow_unsigned = config.getoption("gatekeeper_allow_unsigned")
        self.device = config.getoption("gatekeeper_device")
        self.use_cache = not config.getoption("gatekeeper_no_cache")
        self.prepared = None
        self.verdict = None
        self.reports: dict[str, Path] = {}
        self._failure: str | None = None

    def prepare(self) -> None:
        """Every hash, the signature and each gate's parameters, before any weights load."""
        from gatekeeper.check import prepare
        from gatekeeper.verdict.files import default_report_dir

        self.prepared = prepare(self.bundle_path, device=self.device, allow_unsigned=self.allow_unsigned)
        if self.report_dir is None:
            self.report_dir = self.here / default_report_dir(self.prepared.bundle.manifest)

    @property
    def gates(self) -> list[tuple[str, bool]]:
        return [(gate.name, required) for gate, required in self.prepared.gates]

    @property
    def label(self) -> str:
        manifest = self.prepared.bundle.manifest
        return f"{manifest.name} v{manifest.version}"

    def result(self):
        """The verdict, checking the bundle on the first call; a check that cannot finish fails every caller."""
        if self.verdict is None and self._failure is None:
            from gatekeeper.check import run_check
            from gatekeeper.errors import GatekeeperError

            try:
                if self.prepared is None:  # its bundle.yaml was not collected (--ignore, say)
                    self.prepare()
                self.verdict, self.reports = run_check(self.prepared, self.report_dir, use_cache=self.use_cache)
            except GatekeeperError as exc:
                self._failure = f"gatekeeper: {str(exc).splitlines()[0]}"
            except Exception as exc:  # remembered, so the next gate does not run the whole check again
                self._failure = f"gatekeeper: internal error: {type(exc).__name__}: {exc}"
        if self._failure:
            pytest.fail(self._failure, pytrace=False)
        return self.verdict


_RUN = pytest.StashKey[GatekeeperRun]()


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("gatekeeper_bundle"):
        return
    run = GatekeeperRun(config)
    if not run.manifest_path.is_file():
        raise pytest.UsageError(f"gatekeeper: {run.bundle_path}: not a bundle directory (no bundle.yaml)")
    config.stash[_RUN] = run
    # Collect the bundle like a test file, beside whatever else this run collects: its gates
    # then are ordinary items (counted, selectable with -k, in --junitxml) with a real node id.
    config.args.append(str(run.manifest_path))


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    run = parent.config.stash.get(_RUN, None)
    if run is not None and file_path == run.manifest_path:
        return BundleFile.from_parent(parent, path=file_path, run=run)
    return None


class BundleFile(pytest.File):
    """A bundle's bundle.yaml, collected as a file of tests: one per gate."""

    def __init__(self, *, run: GatekeeperRun, **kwargs):
        super().__init__(**kwargs)
        self.run = run

    def collect(self):
        self.run.prepare()
        for name, required in self.run.gates:
            yield GateItem.from_parent(self, name=name, run=self.run, required=required)

    def repr_failure(self, excinfo, style=None):
        from gatekeeper.errors import GatekeeperError

        if isinstance(excinfo.value, GatekeeperError):  # a bad bundle: one line, as the CLI says it
            line = f"gatekeeper: {str(excinfo.value).splitlines()[0]}"
            return line.replace("--allow-unsigned", "--gatekeeper-allow-unsigned")  # this plugin's name for the flag
        return super().repr_failure(excinfo, style)


class GateItem(pytest.Item):
    """One gate of the bundle, as a test."""

    def __init__(self, *, run: GatekeeperRun, required: bool, **kwargs):
        super().__init__(**kwargs)
        self.run = run
        self.required = required

    def runtest(self) -> None:
        result = self.run.result().gate(self.name)
        if result.status == "passed":
            return
        if result.status == "skipped":  # not evaluated: a skip with its reason, never a pass
            pytest.skip(f"gate {self.name!r} not evaluated: {result.skip_reason}")
        report = str(self.run.reports.get("report.html", "")) or None
        if not self.required:  # reported, never blocking: the same call junit.xml makes
            pytest.skip(f"advisory gate {result.status}: {result.summary or result.error or result.rule}")
        raise GateAssertionError(gate_message(result, f"gate {self.name!r} {result.status}", report))

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, GateAssertionError):
            return str(excinfo.value)  # the evidence is the message; a traceback into the plugin is noise
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, f"gate {self.name} of {self.run.label}"


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    run = config.stash.get(_RUN, None)
    if run is None or run.verdict is None:
        return
    verdict = run.verdict
    word = "PASS" if verdict.passed else "FAIL"
    terminalreporter.write_sep("-", "gatekeeper")
    terminalreporter.write_line(f"{run.label}: {word} (gatekeeper exit code {verdict.exit_code})")
    terminalreporter.write_line(f"report: {run.reports['report.html']}")


def _run_or_skip(request: pytest.FixtureRequest) -> GatekeeperRun:
    run = request.config.stash.get(_RUN, None)
    if run is None:
        pytest.skip("no --gatekeeper-bundle given")
    return run


@pytest.fixture(scope="session")
def gatekeeper_verdict(request: pytest.FixtureRequest):
    """The bundle's verdict (``gatekeeper.verdict.model.Verdict``); the gates run on first use."""
    return _run_or_skip(request).result()


@pytest.fixture(scope="session")
def gatekeeper_bundle(request: pytest.FixtureRequest):
    """The loaded bundle (``gatekeeper.bundle.manifest.LoadedBundle``): manifest, golden sets, root directory."""
    run = _run_or_skip(request)
    if run.prepared is None:
        run.prepare()
    return run.prepared.bundle


@pytest.fixture(scope="session")
def gatekeeper_reports(request: pytest.FixtureRequest) -> dict[str, Path]:
    """Paths of verdict.json, junit.xml and report.html, once the gates have run."""
    run = _run_or_skip(request)
    run.result()
    return run.reports
