"""Moving checked versions through release channels: the version store, promote, replay, restore.

``store`` is the SQLite version store (``VersionStore``); ``channels`` holds
promote, rollback and the check records; ``replay`` the recorded outputs a
rollback drill reproduces; ``restore`` the drill itself.

May import ``gatekeeper.verdict``, ``gatekeeper.gating``, ``gatekeeper.runtime``, ``gatekeeper.bundle`` and below.
"""
