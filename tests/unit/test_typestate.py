"""The isolation chain cannot be misordered: mypy rejects it, and so does the runtime guard."""

from __future__ import annotations

import os

import pytest
from mypy import api as mypy_api

from rustbox._errors import SandboxSetupError
from rustbox._sandbox import _chain
from rustbox._sandbox._spec import BaseTree

HEADER = """\
from rustbox._sandbox._chain import enter_namespaces
from rustbox._sandbox._spec import BaseTree, Order, RunSpec
"""

GOOD = """
prepared = enter_namespaces().make_mounts_private().prepare_root(base)
rooted = prepared.build_root(spec)  # in the proxy
template = prepared.become_template()  # in its child
filtered = template.lock_privileges().install_seccomp(b"")
attached = filtered.await_run(order)
credentialed = attached.apply_hygiene([0, 1, 2], 3).drop_credentials()
credentialed.exec(lambda timings, controls: None)
"""

_TEMPLATE = "enter_namespaces().make_mounts_private().prepare_root(base).become_template()"

MISORDERED = {
    "shared root before private mounts": """
enter_namespaces().prepare_root(base)
""",
    "run root before the shared root": """
enter_namespaces().make_mounts_private().build_root(spec)
""",
    "template before the shared root": """
enter_namespaces().make_mounts_private().become_template()
""",
    "exec straight from the root": """
prepared = enter_namespaces().make_mounts_private().prepare_root(base)
prepared.build_root(spec).exec(lambda timings, controls: None)
""",
    "seccomp before dropping privileges": f"""
{_TEMPLATE}.install_seccomp(b"")
""",
    "run taken before seccomp": f"""
{_TEMPLATE}.lock_privileges().await_run(order)
""",
    "credentials before hygiene": f"""
filtered = {_TEMPLATE}.lock_privileges().install_seccomp(b"")
filtered.await_run(order).drop_credentials()
""",
    "exec before dropping credentials": f"""
filtered = {_TEMPLATE}.lock_privileges().install_seccomp(b"")
filtered.await_run(order).apply_hygiene([0, 1, 2], 3).exec(lambda timings, controls: None)
""",
    "exec without the cgroup": f"""
filtered = {_TEMPLATE}.lock_privileges().install_seccomp(b"")
filtered.apply_hygiene([0, 1, 2], 3)
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
            f"def snippet_{len(spans)}(spec: RunSpec, base: BaseTree, order: Order) -> None:",
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
        _chain.Template(object(), _chain.Timings(), [])


def test_stages_must_come_in_order() -> None:
    _chain.reset_progress()
    with pytest.raises(SandboxSetupError, match="out of order"):
        _chain.Locked(_chain._TOKEN, _chain.Timings(), [])


def test_namespaces_only_as_pid_1() -> None:
    _chain.reset_progress()
    with pytest.raises(SandboxSetupError, match="not PID 1"):
        _chain.enter_namespaces()


def test_a_stage_advances_once() -> None:
    _chain.reset_progress()
    _chain._Progress.stage = _chain.Template  # as if the chain had reached it
    stage = _chain.Locked(_chain._TOKEN, _chain.Timings(), [])
    stage._spent = True  # as after install_seccomp(); calling it again must do nothing
    with pytest.raises(SandboxSetupError, match="already advanced"):
        stage.install_seccomp(b"")
    stage._spent = False
    _chain._Progress.stage = _chain.Filtered  # the chain moved on without this object
    with pytest.raises(SandboxSetupError, match="moved on"):
        stage.install_seccomp(b"")
    _chain.reset_progress()


def test_the_proxy_cannot_become_the_payload() -> None:
    """become_template() refuses to run in PID 1 (checked after the guard, before any effect)."""
    _chain.reset_progress()
    _chain._Progress.stage = _chain.PrivateMounts
    base = BaseTree(root_dir="/nonexistent", readonly_binds=(), seccomp_program=b"")
    prepared = _chain.RootPrepared(_chain._TOKEN, _chain.Timings(), [], base)
    if os.getpid() == 1:
        pytest.skip("running as PID 1")
    # Not PID 1 here, so the check passes and the stage would reset signals: run it
    # in a child to keep the test process untouched.
    pid = os.fork()
    if pid == 0:
        try:
            prepared.become_template()
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    _chain.reset_progress()
