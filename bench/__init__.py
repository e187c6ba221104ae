"""A side-by-side benchmark of fastapi_channels against the alternatives a user would pick.

Run ``python -m bench --help``. Nothing in here is imported by the library or its tests, except
the smoke test, which runs the benchmark on a few connections.
"""
