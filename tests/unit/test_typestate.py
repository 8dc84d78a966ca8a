"""The isolation chain cannot be misordered: mypy rejects it, and so does the runtime guard."""

from __future__ import annotations

import os

import pytest
from mypy import api as mypy_api

from rustbox import _sys
from rustbox._errors import SandboxSetupError
from rustbox._limits import Limits
from rustbox._sandbox import _chain
from rustbox._sandbox._spec import RunSpec

HEADER = """\
from rustbox._host import Cgroup
from rustbox._sandbox._chain import enter_namespaces
from rustbox._sandbox._spec import BaseTree, RunSpec
"""

GOOD = """
sealed = enter_namespaces().make_mounts_private().build_root(base, 1000, 1000).seal()
run = sealed.stage_run(spec)  # in the proxy, per run
attached = run.attach_cgroup(cgroup)  # in its forked child
credentialed = attached.apply_hygiene([0, 1, 2], 3).drop_credentials()
filtered = credentialed.lock_privileges().install_seccomp(b"")
filtered.exec(lambda timings, controls: None)
sealed = run.clear()  # back in the proxy, after the run
"""

_SEALED = "enter_namespaces().make_mounts_private().build_root(base, 1000, 1000).seal()"
_RUN = f"{_SEALED}.stage_run(spec)"

MISORDERED = {
    "root before private mounts": """
enter_namespaces().build_root(base, 1000, 1000)
""",
    "seal before the root": """
enter_namespaces().make_mounts_private().seal()
""",
    "run before the seal": """
enter_namespaces().make_mounts_private().build_root(base, 1000, 1000).stage_run(spec)
""",
    "payload before its run root": f"""
{_SEALED}.attach_cgroup(cgroup)
""",
    "hygiene before the cgroup": f"""
{_RUN}.apply_hygiene([0, 1, 2], 3)
""",
    "credentials before hygiene": f"""
{_RUN}.attach_cgroup(cgroup).drop_credentials()
""",
    "seccomp before the privilege check": f"""
{_RUN}.attach_cgroup(cgroup).apply_hygiene([0, 1, 2], 3).drop_credentials().install_seccomp(b"")
""",
    "exec before seccomp": f"""
attached = {_RUN}.attach_cgroup(cgroup)
attached.apply_hygiene([0, 1, 2], 3).drop_credentials().lock_privileges().exec(lambda t, c: None)
""",
    "exec straight from the run root": f"""
{_RUN}.exec(lambda timings, controls: None)
""",
    "exec right after the cgroup": f"""
{_RUN}.attach_cgroup(cgroup).exec(lambda timings, controls: None)
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
        _chain.Rooted(object(), _chain.Timings(), [])


def test_stages_must_come_in_order() -> None:
    _chain.reset_progress()
    with pytest.raises(SandboxSetupError, match="out of order"):
        _chain.Sealed(_chain._TOKEN, _chain.Timings(), [])


def test_namespaces_only_as_pid_1() -> None:
    _chain.reset_progress()
    with pytest.raises(SandboxSetupError, match="not PID 1"):
        _chain.enter_namespaces()


def test_a_stage_advances_once() -> None:
    _chain.reset_progress()
    _chain._Progress.stage = _chain.PrivateMounts  # as if the chain had reached it
    stage = _chain.Rooted(_chain._TOKEN, _chain.Timings(), [])
    stage._spent = True  # as after seal(); calling it again must do nothing
    with pytest.raises(SandboxSetupError, match="already advanced"):
        stage.seal()
    stage._spent = False
    _chain._Progress.stage = _chain.Sealed  # the chain moved on without this object
    with pytest.raises(SandboxSetupError, match="moved on"):
        stage.seal()
    _chain.reset_progress()


def _spec() -> RunSpec:
    return RunSpec(
        run_id="t",
        argv=("/bin/true",),
        env=(),
        cwd="/box",
        files=(),
        collect=(),
        limits=Limits(),
        uid=60000,
        gid=60000,
    )


def test_a_sealed_slot_takes_one_run_at_a_time() -> None:
    """stage_run() twice without clear() in between is refused before any mount."""
    _chain.reset_progress()
    _chain._Progress.stage = _chain.Rooted
    sealed = _chain.Sealed(_chain._TOKEN, _chain.Timings(), [])
    sealed._spent = True  # as after a first stage_run()
    with pytest.raises(SandboxSetupError, match="already advanced"):
        sealed.stage_run(_spec())
    _chain.reset_progress()


def test_only_the_proxy_clears_a_run() -> None:
    _chain.reset_progress()
    _chain._Progress.stage = _chain.Sealed
    run = _chain.RunRooted(_chain._TOKEN, _chain.Timings(), [], _spec())
    if os.getpid() == 1:
        pytest.skip("running as PID 1")
    with pytest.raises(SandboxSetupError, match="only the proxy"):
        run.clear()
    _chain.reset_progress()


def test_the_proxy_cannot_become_the_payload() -> None:
    """attach_cgroup() refuses to run in PID 1 (checked after the guard, before any effect).

    Checked for real: a grandchild is PID 1 of a fresh PID namespace.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root for a PID namespace")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _sys.unshare(_sys.CLONE_NEWPID)
            inner = os.fork()
            if inner == 0:
                ok = 1
                try:
                    _chain.reset_progress()
                    _chain._Progress.stage = _chain.Sealed
                    run = _chain.RunRooted(_chain._TOKEN, _chain.Timings(), [], _spec())
                    try:
                        run.attach_cgroup(None)  # type: ignore[arg-type]
                    except SandboxSetupError as exc:
                        ok = 0 if "cannot become the payload" in str(exc) else 1
                finally:
                    os._exit(ok)
            _, status = os.waitpid(inner, 0)
            code = os.waitstatus_to_exitcode(status)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
