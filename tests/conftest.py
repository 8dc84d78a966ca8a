"""Shared fixtures. Root tests run for real against this machine's kernel."""

from __future__ import annotations

import os

import pytest

collect_ignore_glob: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (namespaces, cgroups, seccomp)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
