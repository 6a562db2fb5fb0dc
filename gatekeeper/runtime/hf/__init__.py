"""The Hugging Face runtime: one base in memory, the adapter toggled on and off, the merged side beside it.

``runtime`` is the entry point (``HFRuntime``); prompts are rendered by
``gatekeeper.runtime.prompts``, as training renders them; ``decoding`` and ``head`` are the batched greedy decoder;
``fused`` adds LoRA updates in place; ``merged`` builds and compares the merged
model; ``timing`` measures latency and memory; ``delta`` swaps full-weight
candidates in; ``modeling`` holds model helpers the trainer shares.
"""
