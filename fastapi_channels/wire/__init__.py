"""Wire: packets, channel patterns, errors, limits and history values; pure, no I/O.

Imports nothing from the rest of the package: every other layer, the brokers and the client
build on it.
"""
