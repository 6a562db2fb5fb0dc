"""Gate machinery: the plugin registry, the context a gate reads, the engine that asks runtimes, evidence.

``registry`` holds ``@gate`` and the ``gatekeeper.gates`` entry points; ``result``
the ``GateResult`` a gate returns; ``context`` the ``GateContext`` it reads;
``engine`` collects requests, asks the runtime and hands responses back;
``evidence`` and ``stats`` turn per-item outcomes into paired statistics (and
confidences into calibration error); ``labels`` reads a side's label for an item;
``overlap``, ``pii``, ``refusal`` and ``answer_checks`` are matchers gates share.
The built-in gates themselves live in the top-level ``gates/`` folder, installed
as ``gatekeeper.builtin_gates``.

May import ``gatekeeper.runtime`` (types and protocol), ``gatekeeper.bundle``, ``gatekeeper._util``.
"""
