"""The Python client loads no part of the server: each test imports it in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

SERVER_SIDE = (
    "fastapi",
    "starlette",
    "injector",
    "fastapi_channels.core",
    "fastapi_channels.app",
    "fastapi_channels.edge",
    "fastapi_channels.auth",
    "fastapi_channels.brokers",
)


def run_fresh(script: str) -> Any:
    """Run ``script`` in a new interpreter and return what it printed, as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def loaded_after(statement: str) -> list[str]:
    """The modules a fresh interpreter has loaded after running ``statement``."""
    modules: list[str] = run_fresh(
        f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    )
    return modules


def server_side(modules: list[str]) -> list[str]:
    return [
        name
        for name in modules
        if any(name == root or name.startswith(root + ".") for root in SERVER_SIDE)
    ]


@pytest.mark.parametrize(
    "statement",
    [
        "import fastapi_channels.client",
        "import fastapi_channels.client.cli",
        "from fastapi_channels.client import ChannelsClient, ReplyError",
        "import fastapi_channels",
    ],
    ids=["client", "client-cli", "client-names", "package"],
)
def test_the_client_loads_no_server_module(statement: str) -> None:
    modules = loaded_after(statement)
    assert "fastapi_channels" in modules
    assert server_side(modules) == []


def test_a_public_name_loads_its_module_on_first_use() -> None:
    modules = loaded_after("from fastapi_channels import Channels")
    assert "fastapi_channels.edge.channels" in modules
    assert "fastapi" in modules


def test_the_package_lists_its_names_before_loading_them() -> None:
    listed, public, loaded = run_fresh(
        "import json, sys, fastapi_channels\n"
        "print(json.dumps([dir(fastapi_channels), fastapi_channels.__all__, list(sys.modules)]))"
    )
    assert set(listed) >= set(public)
    assert "fastapi_channels.edge.channels" not in loaded
