"""Reports rendered from a verdict: ``verdict.json``, ``junit.xml``, ``report.html``, the HTML diff, plots.

``templates/`` holds the Jinja templates, ``schemas/`` the committed JSON Schemas
of the bundle, recipe and verdict documents (``make schemas``).

May import ``gatekeeper.verdict`` and below.
"""
