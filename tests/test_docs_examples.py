"""The docs' code samples are files that run here, so none of them can rot.

Every Python sample a page shows is a copy of a module in ``docs/examples`` whose ``check()``
runs below (``test_*.py`` modules there are ordinary tests), of the demo or of the tests; every
JavaScript sample of ``docs/examples/js``, which the Node tests run
(``clients/js/test/docs.test.mjs``). The page holds the code itself, so that it reads complete
where Markdown is shown as it is (the forge, an editor); a comment above each block names the
file, and the section of it, that the block must equal::

    <!-- source: docs/examples/first_channel/chat.py:listener -->
    ```python
    ...
    ```

A section is the lines between ``# --8<-- [start:NAME]`` and ``# --8<-- [end:NAME]``, dedented;
without a section the block is the whole file less those markers. Every public name is on an API
reference page, and the README's example is the tested one.
"""

from __future__ import annotations

import importlib
import inspect
import re
import textwrap
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
EXAMPLES_DIR = DOCS / "examples"
EXAMPLES = sorted(
    p.stem for p in EXAMPLES_DIR.glob("*.py") if not p.stem.startswith(("_", "test_"))
)
PAGES = sorted(DOCS.rglob("*.md"))
CODE_LANGUAGES = {"python", "py", "pycon", "js", "javascript", "mjs", "ts", "typescript"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)[ \t]*(?P<info>[^\n]*)$")
INCLUDE = re.compile(r"-{1,}8<-{1,}\s")
SOURCE = re.compile(r"^\s*<!-- source: (?P<path>[^\s:]+)(?::(?P<section>[\w-]+))? -->\s*$")
MARKER = re.compile(r"-{1,}8<-{1,}\s+\[\s*(?:start|end)\s*:\s*(?P<name>[\w-]+)\s*\]")
TESTED_ROOTS = ("docs/examples/", "docs/deploy/", "demo/", "tests/")


class Block(NamedTuple):
    """A fenced code block of a page."""

    line: int
    """The line number of its first line of code."""
    language: str
    body: list[str]
    """Its lines, less the indentation of its opening fence."""
    source: str | None
    """``path`` or ``path:section`` from the ``<!-- source: ... -->`` comment above it."""


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a page."""
    found: list[Block] = []
    lines = page.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence, info = opening["indent"], opening["fence"], opening["info"]
        language = re.sub(r"[{}.]", " ", info).split()[0].lower() if info.strip() else ""
        above = [line for line in lines[max(0, index - 2) : index] if line.strip()]
        comment = SOURCE.match(above[-1]) if above else None
        source = None
        if comment is not None:
            source = comment["path"] + (f":{comment['section']}" if comment["section"] else "")
        body: list[str] = []
        start = index + 1
        index += 1
        while index < len(lines) and lines[index].strip() != fence:
            line = lines[index]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            index += 1
        found.append(Block(start, language, body, source))
        index += 1
    return found


def shown(source: str) -> list[str]:
    """What a block naming ``source`` (``path`` or ``path:section``) must hold."""
    path, _, section = source.partition(":")
    lines = (ROOT / path).read_text().splitlines()
    if not section:
        return [line for line in lines if not MARKER.search(line)]
    inside: list[str] = []
    started = False
    for line in lines:
        marker = MARKER.search(line)
        if marker is not None:
            if marker["name"] == section:
                if started:
                    break
                started = True
            continue
        if started:
            inside.append(line)
    assert started, f"no section {section} in {path}"
    return textwrap.dedent("\n".join(inside)).split("\n")


@pytest.mark.parametrize("name", EXAMPLES)
async def test_example_runs(name: str) -> None:
    module = importlib.import_module(f"docs.examples.{name}")
    check = getattr(module, "check", None)
    if check is not None:
        assert inspect.iscoroutinefunction(check)
        await check()


@pytest.mark.parametrize("page", [*PAGES, README], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_sample_is_a_copy_of_a_tested_file(page: Path) -> None:
    node_tests = (ROOT / "clients" / "js" / "test" / "docs.test.mjs").read_text()
    for block in blocks(page):
        if block.language not in CODE_LANGUAGES and block.source is None:
            continue  # a command or an output; a configuration file names its source too
        where = f"{page.name}:{block.line}"
        assert block.source is not None, (
            f"{where}: a {block.language} sample without a tested file; put it in docs/examples/ "
            f"(run by the tests) and name it in a <!-- source: PATH:SECTION --> comment above"
        )
        path = block.source.partition(":")[0]
        assert (ROOT / path).is_file(), f"{where} names a missing {path}"
        assert path.startswith(TESTED_ROOTS), f"{where} names {path}, which no test runs"
        if path.startswith("docs/examples/js/"):
            assert f"../../../{path}" in node_tests, f"no Node test imports {path}"
        expected = "\n".join(shown(block.source)).strip("\n")
        assert "\n".join(block.body).strip("\n") == expected, (
            f"{where} differs from {block.source}; copy the file's section into the page"
        )


@pytest.mark.parametrize("page", [*PAGES, README], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_includes_a_file(page: Path) -> None:
    """An include shows as a bare line where Markdown is read as it is: the code goes inline."""
    for number, line in enumerate(page.read_text().splitlines(), 1):
        assert not INCLUDE.search(line), f"{page.name}:{number} includes a file: {line.strip()}"


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
    readme = blocks(README)
    assert (
        next(b for b in readme if b.language == "python").source == "docs/examples/readme.py:readme"
    )
    commands = next(block.body for block in readme if block.language == "bash")
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
