"""Attacks replayed against a real uvicorn server, one module per finding.

Each module is named after the issue item it replays (``test_02_message_size.py`` is item 2 of
issue 18) and asserts what the attacker gets now, with the resources the server holds read
from /proc (`resources`). The `serve` fixture (conftest.py) runs a small app under uvicorn in
the test's process, configured as the docs say; ``serve(limits=..., channels=...,
uvicorn=..., wrap=...)`` changes what an attack needs. `frames` writes raw websocket frames.
To add a finding: a new module, its attack against ``serve()``, and its figures.
"""
