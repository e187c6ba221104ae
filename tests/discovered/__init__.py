"""A package of listeners, found by ``Channels(discover="tests.discovered")``."""
