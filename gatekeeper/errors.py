"""Every error gatekeeper raises on purpose.

    GatekeeperError              one clear line for the user; exit code 2
    ├── BundleError              bundle.yaml, its files or their hashes
    ├── RecipeError              recipe.yaml or its training data
    ├── GoldenSetError           a golden set file (carries file and line)
    ├── UnknownGateError         a gate name nobody registered
    ├── GateParameterError       bundle parameters that do not fit a gate
    ├── RuntimeLoadError         a base model or adapter that will not load
    ├── VerdictError             a verdict.json that is missing or is not a verdict
    └── MissingDependency        an optional package; carries the pip command
    GateCrashed                  a gate raised while evaluating (exit code 3)

Anything else that escapes is a bug and is reported as an internal error.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes: part of the CLI's contract with CI systems."""

    PASSED = 0
    GATE_FAILED = 1
    USAGE_ERROR = 2
    INTERNAL_ERROR = 3


class GatekeeperError(Exception):
    """Root of the errors a user can fix; the message is one line."""

    exit_code = ExitCode.USAGE_ERROR


class BundleError(GatekeeperError):
    pass


class RecipeError(GatekeeperError):
    pass


class GoldenSetError(GatekeeperError):
    def __init__(self, path, line: int | None, problem: str):
        self.path, self.line, self.problem = str(path), line, problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


class UnknownGateError(GatekeeperError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class GateParameterError(GatekeeperError):
    pass


class RuntimeLoadError(GatekeeperError):
    pass


class VerdictError(GatekeeperError):
    pass


class MissingDependency(GatekeeperError):
    def __init__(self, package: str, purpose: str):
        self.pip_command = f"pip install {package}"
        super().__init__(f"{purpose} needs the package {package!r}: {self.pip_command}")


class GatekeeperWarning(UserWarning):
    """Something the user should know that does not stop the command; the CLI prints it as one line."""


class GateCrashed(Exception):
    """A gate raised instead of returning a result; keeps which gate."""

    exit_code = ExitCode.INTERNAL_ERROR

    def __init__(self, gate: str, cause: BaseException):
        self.gate = gate
        super().__init__(f"gate {gate!r} crashed: {type(cause).__name__}: {cause}")
