"""The isolation chain cannot be misordered: mypy rejects it, and so does the runtime guard."""

from __future__ import annotations

import os

import pytest
from mypy import api as mypy_api

from rustbox._errors import SandboxSetupError
from rustbox._limits import Limits
from rustbox._sandbox import _chain
from rustbox._sandbox._spec import RunSpec, SpawnOrder

HEADER = """\
from rustbox._sandbox._chain import enter_namespaces, join_slot
from rustbox._sandbox._spec import BaseTree, Rlimits, RunSpec, SpawnOrder
"""

GOOD = """
rooted = enter_namespaces().make_mounts_private().build_root(base, 1000, 1000)
run = rooted.stage_run(spec)  # the proxy, per run
rooted = run.clear()  # the proxy, after the run
spawner = join_slot(3).lock().limit(rlimits).install_seccomp(b"")  # the spawner, per slot
hygienic = spawner.attach_cgroup(order, [4]).apply_hygiene(rlimits)  # per run
spawned = hygienic.take_credentials().spawn([0, 1, 2])
spawner = spawned.restore([5])
"""

_SPAWNER = 'join_slot(3).lock().limit(rlimits).install_seccomp(b"")'

MISORDERED = {
    "root before private mounts": """
enter_namespaces().build_root(base, 1000, 1000)
""",
    "a run before the root": """
enter_namespaces().make_mounts_private().stage_run(spec)
""",
    "rlimits before the lock": """
join_slot(3).limit(rlimits)
""",
    "seccomp before the rlimits": """
join_slot(3).lock().install_seccomp(b"")
""",
    "a run before seccomp": """
join_slot(3).lock().limit(rlimits).attach_cgroup(order, [4])
""",
    "hygiene before the cgroup": f"""
{_SPAWNER}.apply_hygiene(rlimits)
""",
    "credentials before hygiene": f"""
{_SPAWNER}.attach_cgroup(order, [4]).take_credentials()
""",
    "spawn before the credentials": f"""
{_SPAWNER}.attach_cgroup(order, [4]).apply_hygiene(rlimits).spawn([0, 1, 2])
""",
    "spawn straight from the cgroup": f"""
{_SPAWNER}.attach_cgroup(order, [4]).spawn([0, 1, 2])
""",
    "the proxy spawning": """
enter_namespaces().make_mounts_private().build_root(base, 1000, 1000).stage_run(spec).spawn([0])
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
            f"def snippet_{len(spans)}(spec: RunSpec, base: BaseTree, order: SpawnOrder, "
            "rlimits: Rlimits) -> None:",
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
        _chain.Rooted(_chain._TOKEN, _chain.Timings(), [])
    with pytest.raises(SandboxSetupError, match="out of order"):
        _chain.Limited(_chain._TOKEN, _chain.Timings(), [])


def test_namespaces_only_as_pid_1() -> None:
    _chain.reset_progress()
    with pytest.raises(SandboxSetupError, match="not PID 1"):
        _chain.enter_namespaces()


def test_a_stage_advances_once() -> None:
    _chain.reset_progress()
    _chain._Progress.stage = _chain.Joined  # as if the chain had reached it
    stage = _chain.Locked(_chain._TOKEN, _chain.Timings(), [])
    stage._spent = True  # as after limit(); calling it again must do nothing
    with pytest.raises(SandboxSetupError, match="already advanced"):
        stage.limit(())
    stage._spent = False
    _chain._Progress.stage = _chain.Limited  # the chain moved on without this object
    with pytest.raises(SandboxSetupError, match="moved on"):
        stage.limit(())
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


def test_a_slot_takes_one_run_at_a_time() -> None:
    """stage_run() twice without clear(), or attach_cgroup() twice without restore(),
    is refused before any effect."""
    _chain.reset_progress()
    _chain._Progress.stage = _chain.PrivateMounts
    rooted = _chain.Rooted(_chain._TOKEN, _chain.Timings(), [])
    rooted._spent = True  # as after a first stage_run()
    with pytest.raises(SandboxSetupError, match="already advanced"):
        rooted.stage_run(_spec())
    _chain._Progress.stage = _chain.Limited
    spawner = _chain.Spawner(_chain._TOKEN, _chain.Timings(), [])
    spawner._spent = True  # as after a first attach_cgroup()
    order = SpawnOrder.of(_spec())
    with pytest.raises(SandboxSetupError, match="already advanced"):
        spawner.attach_cgroup(order, [])
    _chain.reset_progress()


def test_hygiene_refuses_a_run_with_other_rlimits() -> None:
    """A slot's spawner carries one set of rlimits; a run with others is refused."""
    _chain.reset_progress()
    _chain._Progress.stage = _chain.Limited
    spawner = _chain.Spawner(_chain._TOKEN, _chain.Timings(), [])
    order = SpawnOrder.of(_spec())
    in_cgroup = spawner.attach_cgroup(order, [])  # no fds: joins nothing
    other = Limits(open_files=99).rlimits()
    with pytest.raises(SandboxSetupError, match="not this slot's"):
        in_cgroup.apply_hygiene(other)
    _chain.reset_progress()
