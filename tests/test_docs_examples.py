"""Every code sample the docs include is a module in docs/examples; each one runs here."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p.stem for p in (ROOT / "docs" / "examples").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("name", EXAMPLES)
async def test_example_runs(name: str) -> None:
    module = importlib.import_module(f"docs.examples.{name}")
    check = getattr(module, "check", None)
    if check is not None:
        assert inspect.iscoroutinefunction(check)
        await check()


def test_every_included_file_exists() -> None:
    for page in (ROOT / "docs").glob("*.md"):
        for included in re.findall(r'--8<-- "([^"]+)"', page.read_text()):
            path = included.split(":")[0]
            assert (ROOT / path).is_file(), f"{page.name} includes a missing {path}"
