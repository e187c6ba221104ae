"""The docs' code samples are files that run here, so none of them can rot.

Every Python sample a page shows is included (``--8<--``) from a module in ``docs/examples``
whose ``check()`` runs below (``test_*.py`` modules there are ordinary tests), from the demo or
from the tests; every JavaScript sample from ``docs/examples/js``, which the Node tests run
(``clients/js/test/docs.test.mjs``). A page may not hold a Python or JavaScript block of its
own, every public name is on an API reference page, and the README's example is the tested one.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES_DIR = DOCS / "examples"
EXAMPLES = sorted(
    p.stem for p in EXAMPLES_DIR.glob("*.py") if not p.stem.startswith(("_", "test_"))
)
PAGES = sorted(DOCS.rglob("*.md"))
CODE_LANGUAGES = {"python", "py", "pycon", "js", "javascript", "mjs", "ts", "typescript"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)[ \t]*(?P<info>[^\n]*)$")
INCLUDE = re.compile(r'^\s*-{1,}8<-{1,}\s+"(?P<path>[^"]+)"\s*$')
TESTED_ROOTS = ("docs/examples/", "demo/", "tests/")


def _blocks(page: Path) -> list[tuple[int, str, list[str]]]:
    """The fenced code blocks of a page: (line number, language, body lines)."""
    blocks: list[tuple[int, str, list[str]]] = []
    lines = page.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, info = opening["fence"], opening["info"]
        language = re.sub(r"[{}.]", " ", info).split()[0].lower() if info.strip() else ""
        body: list[str] = []
        start = index + 1
        index += 1
        while index < len(lines) and lines[index].strip() != fence:
            body.append(lines[index])
            index += 1
        blocks.append((start, language, body))
        index += 1
    return blocks


def _includes(page: Path) -> list[str]:
    """The paths (with their ``:section``) a page includes."""
    return [m["path"] for line in page.read_text().splitlines() if (m := INCLUDE.match(line))]


@pytest.mark.parametrize("name", EXAMPLES)
async def test_example_runs(name: str) -> None:
    module = importlib.import_module(f"docs.examples.{name}")
    check = getattr(module, "check", None)
    if check is not None:
        assert inspect.iscoroutinefunction(check)
        await check()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_no_sample_is_written_inline(page: Path) -> None:
    """Python and JavaScript blocks hold only includes of files the suite runs."""
    for line, language, body in _blocks(page):
        if language not in CODE_LANGUAGES:
            continue
        written = [text for text in body if text.strip() and not INCLUDE.match(text)]
        assert not written, (
            f"{page.name}:{line}: a {language} sample written in the page; move it to "
            f"docs/examples/ (run by the tests) and include it with --8<--"
        )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_every_included_file_exists_and_is_tested(page: Path) -> None:
    node_tests = (ROOT / "clients" / "js" / "test" / "docs.test.mjs").read_text()
    for included in _includes(page):
        path, _, section = included.partition(":")
        assert (ROOT / path).is_file(), f"{page.name} includes a missing {path}"
        assert path.startswith(TESTED_ROOTS), f"{page.name} includes {path}, which no test runs"
        if path.startswith("docs/examples/js/"):
            assert f"../../../{path}" in node_tests, f"no Node test imports {path}"
        if section and not section[0].isdigit():
            text = (ROOT / path).read_text()
            assert f"[start:{section}]" in text, f"{page.name}: no section {section} in {path}"


def test_every_javascript_example_is_run_by_the_node_tests() -> None:
    node_tests = (ROOT / "clients" / "js" / "test" / "docs.test.mjs").read_text()
    for module in sorted((EXAMPLES_DIR / "js").glob("*.mjs")):
        assert f"../../../docs/examples/js/{module.name}" in node_tests, module.name


def test_every_page_is_in_the_navigation() -> None:
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.SafeLoader)

    def listed(entries: Any) -> set[str]:
        if isinstance(entries, str):
            return {entries}
        if isinstance(entries, dict):
            return set().union(*(listed(value) for value in entries.values()))
        return set().union(*(listed(entry) for entry in entries))

    pages = {str(page.relative_to(DOCS)) for page in PAGES}
    assert pages == listed(config["nav"])


def test_the_readme_example_is_the_tested_one() -> None:
    readme = (ROOT / "README.md").read_text()
    shown = readme.split("```python\n", 1)[1].split("```", 1)[0]
    module = (EXAMPLES_DIR / "readme.py").read_text()
    tested = module.split("# --8<-- [start:readme]\n", 1)[1].split("# --8<-- [end:readme]")[0]
    assert shown.strip() == tested.strip(), "README.md's example is not docs/examples/readme.py's"
    commands = readme.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert [line.split()[0] for line in commands] == ["scripts/demo", "scripts/test"]


REFERENCED_PACKAGES = [
    "fastapi_channels",
    "fastapi_channels.auth",
    "fastapi_channels.testing",
    "fastapi_channels.client",
    "fastapi_channels.brokers",
]


def test_every_public_name_is_in_the_api_reference() -> None:
    documented: list[object] = []
    for page in sorted((DOCS / "reference").glob("*.md")):
        for path in re.findall(r"^::: ([\w.]+)", page.read_text(), flags=re.MULTILINE):
            documented.append(_resolve(path))
    for package in REFERENCED_PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            value = getattr(module, name)
            assert any(value is seen for seen in documented), f"{package}.{name} is undocumented"


def _resolve(path: str) -> object:
    """The object a mkdocstrings identifier names."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            found = getattr(found, attribute)
        return found
    raise AssertionError(f"cannot resolve {path}")
