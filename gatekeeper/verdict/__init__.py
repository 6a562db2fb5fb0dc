"""The verdict: every gate's result and the record of what was checked; diffs and assertions over it.

May import ``gatekeeper.gating`` (results) and below.
"""
