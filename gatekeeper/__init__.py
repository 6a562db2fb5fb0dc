"""gatekeeper: decide whether a fine-tuned adapter may ship.

Importing the package is cheap: no torch, no transformers. Model code loads
only when a model is needed.
"""

__version__ = "0.1.0"
