"""The broker contract: what every broker must do, run on every broker.

Three parts, each a module: pub/sub (`test_pubsub`, every broker), history (`test_history`,
brokers that are a `HistoryStore`) and presence (`test_presence`, brokers that are a
`PresenceStore`). The brokers are the ``deployment`` fixture's parameters: ``memory``,
``redis`` and ``pubsub-only`` (the fifty-line engine of ``tests/pubsub_broker.py``); a part
that needs a store is skipped, by type, on a broker that is not one. What is specific to one
broker (Redis faults, batching, URLs) stays in ``tests/test_brokers.py`` and
``tests/test_broker_state.py``.
"""
