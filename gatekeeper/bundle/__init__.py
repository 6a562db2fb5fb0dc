"""The documents a check judges: bundle manifest, recipe, golden sets and contracts, signatures, base models.

``manifest`` holds the ``bundle.yaml`` models and ``loading`` reads a bundle with
every hash checked; ``recipe`` is the training recipe a bundle carries; ``goldens``
the golden sets and output contracts; ``signing`` the Ed25519 signatures;
``base`` resolves a base reference (a built-in alias or a local directory) to files.

May import ``gatekeeper._util`` and ``gatekeeper.errors``; never a runtime, gate or report.
"""
