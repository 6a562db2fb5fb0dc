"""The built-in trainer: recipe in, a signed candidate version out.

``loop`` is the training loop; ``methods`` holds one module per training
method, registered once; ``data`` and ``rehearsal`` build the batches;
``checkpoint`` makes runs resumable; ``versions`` writes a trained candidate as
the next bundle version.

May import ``gatekeeper.bundle``, the model helpers of ``gatekeeper.runtime.hf``
and below; never ``gating``, ``report`` or ``release``.
"""
