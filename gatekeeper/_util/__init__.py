"""Small mechanisms every stage uses: content hashes, user directories, atomic writes, one-line messages.

May import nothing of gatekeeper but ``gatekeeper.errors``.
"""
