"""App: listener classes, their registry, middleware and the inbound dispatcher.

Turns declared listener classes into the routes the dispatcher serves and the channel specs
the core fans out with; knows nothing of ASGI.
"""
