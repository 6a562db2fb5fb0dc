"""What a model is asked and who answers it.

``requests`` holds the request and answer types; ``protocol`` the ``Runtime``
protocol every engine implements from its declaration alone; ``cache`` the
response cache keyed by runtime identity and request; ``hf`` the Hugging Face
runtime (decoding, the merged side, timing, model helpers the trainer shares).

May import ``gatekeeper.bundle``, ``gatekeeper._util`` and ``gatekeeper.errors``.
"""
