"""The isolation chain cannot be misordered: mypy rejects it, and so does the runtime guard."""

from __future__ import annotations

import os

import pytest
from mypy import api as mypy_api

from rustbox._errors import SandboxSetupError
from rustbox._sandbox import _chain

HEADER = """\
from rustbox._host import Cgroup
from rustbox._sandbox._chain import enter_namespaces
from rustbox._sandbox._spec import BaseTree, RunSpec
"""

GOOD = """
private = enter_namespaces().make_mounts_private()
rooted = private.prepare_root(base).build_root(spec)
attached = rooted.attach_cgroup(cgroup)
hygienic = attached.apply_hygiene([0, 1, 2], 3)
locked = hygienic.drop_credentials().lock_privileges()
locked.install_seccomp().exec(lambda timings, controls: None)
"""

MISORDERED = {
    "exec before seccomp": """
rooted = enter_namespaces().make_mounts_private().prepare_root(base).build_root(spec)
hygienic = rooted.attach_cgroup(cgroup).apply_hygiene([0, 1, 2], 3)
hygienic.drop_credentials().lock_privileges().exec(lambda timings, controls: None)
""",
    "root before private mounts": """
rooted = enter_namespaces().prepare_root(base)
""",
    "run root before the shared root": """
rooted = enter_namespaces().make_mounts_private().build_root(spec)
""",
    "credentials before hygiene": """
rooted = enter_namespaces().make_mounts_private().prepare_root(base).build_root(spec)
rooted.attach_cgroup(cgroup).drop_credentials()
""",
    "seccomp before dropping privileges": """
rooted = enter_namespaces().make_mounts_private().prepare_root(base).build_root(spec)
rooted.attach_cgroup(cgroup).apply_hygiene([0, 1, 2], 3).drop_credentials().install_seccomp()
""",
    "exec straight from the root": """
rooted = enter_namespaces().make_mounts_private().prepare_root(base).build_root(spec)
rooted.exec(lambda timings, controls: None)
""",
    "cgroup skipped": """
rooted = enter_namespaces().make_mounts_private().prepare_root(base).build_root(spec)
rooted.apply_hygiene([0, 1, 2], 3)
""",
}


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Type-check every snippet in one mypy run; errors grouped by snippet."""
    lines = HEADER.splitlines()
    spans: dict[str, tuple[int, int]] = {}
    for name, body in [("good", GOOD), *MISORDERED.items()]:
        lines += [
            "",
            "",
            f"def snippet_{len(spans)}(spec: RunSpec, base: BaseTree, cgroup: Cgroup) -> None:",
        ]
        start = len(lines) + 1
        lines += ["    " + line for line in body.strip().splitlines()]
        spans[name] = (start, len(lines))
    source = tmp_path_factory.mktemp("typestate") / "snippets.py"
    source.write_text("\n".join(lines) + "\n")
    stdout, stderr, _ = mypy_api.run(
        ["--strict", "--no-incremental", "--cache-dir", os.devnull, str(source)]
    )
    errors: dict[str, list[str]] = {name: [] for name in spans}
    for line in (stdout + stderr).splitlines():
        parts = line.split(":", 3)
        if len(parts) < 4 or not parts[1].isdigit():
            continue
        number = int(parts[1])
        for name, (first, last) in spans.items():
            if first <= number <= last:
                errors[name].append(line)
    return errors


def test_the_right_order_type_checks(mypy_errors: dict[str, list[str]]) -> None:
    assert mypy_errors["good"] == []


@pytest.mark.parametrize("name", sorted(MISORDERED))
def test_a_misordered_chain_does_not_type_check(
    mypy_errors: dict[str, list[str]], name: str
) -> None:
    errors = mypy_errors[name]
    assert errors, f"mypy accepted a misordered chain: {name}"
    assert any('has no attribute "' in e for e in errors), errors


def test_stages_cannot_be_built_directly() -> None:
    with pytest.raises(SandboxSetupError, match="built only by the chain"):
        _chain.Filtered(object(), None, _chain.Timings(), [])


def test_stages_must_come_in_order() -> None:
    _chain.reset_progress()
    with pytest.raises(SandboxSetupError, match="out of order"):
        _chain.Rooted(_chain._TOKEN, None, _chain.Timings(), [])


def test_a_late_stage_needs_a_run() -> None:
    _chain.reset_progress()
    _chain._Progress.index = _chain.Locked._index - 1
    locked = _chain.Locked(_chain._TOKEN, None, _chain.Timings(), [])
    with pytest.raises(SandboxSetupError, match="no run specification"):
        locked.install_seccomp()
    _chain.reset_progress()


def test_namespaces_only_as_pid_1() -> None:
    _chain.reset_progress()
    with pytest.raises(SandboxSetupError, match="not PID 1"):
        _chain.enter_namespaces()


def test_a_stage_advances_once() -> None:
    _chain.reset_progress()
    _chain._Progress.index = _chain.Namespaced._index - 1
    stage = _chain.Namespaced(_chain._TOKEN, None, _chain.Timings(), [])
    stage._spent = True  # as after make_mounts_private(); calling it must not mount anything
    with pytest.raises(SandboxSetupError, match="already advanced"):
        stage.make_mounts_private()
    _chain._Progress.index = 5  # the chain moved on without this stage
    stage._spent = False
    with pytest.raises(SandboxSetupError, match="moved on"):
        stage.make_mounts_private()
    _chain.reset_progress()
