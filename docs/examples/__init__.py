"""Code samples the documentation includes; tests/test_docs_examples.py runs every one."""
