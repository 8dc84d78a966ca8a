"""CgroupTree and Cgroup against fake cgroupfs trees in a tmp dir.

A fake tree is plain directories holding the files the kernel would show;
writes just write the files. Kernel-only behaviour (kill, rmdir EBUSY) is in
tests/integration/test_cgroup_real.py.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from rustbox._errors import HostUnsupported, InvalidInput
from rustbox._host import Cgroup, CgroupLimits, CgroupStats, CgroupTree

MiB = 1 << 20
LIMITS = CgroupLimits(memory=256 * MiB, pids=10)


def _files(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (directory / name).write_text(content)


def _meminfo(tmp_path: Path, swap_kb: int) -> str:
    path = tmp_path / "meminfo"
    path.write_text(f"MemTotal:       16318912 kB\nSwapTotal:      {swap_kb} kB\nSwapFree: 0 kB\n")
    return str(path)


def _fake_v1(
    root: Path, *, cpuacct: str = "cpuacct", memsw: bool = True, freezer: bool = True
) -> Path:
    memory = {
        "cgroup.procs": "",
        "memory.limit_in_bytes": "9223372036854771712\n",
        "memory.use_hierarchy": "1\n",
    }
    if memsw:
        memory["memory.memsw.limit_in_bytes"] = "9223372036854771712\n"
    _files(root / "memory", memory)
    # The parent group, as the kernel would populate it on mkdir.
    _files(root / "memory" / "rustbox", memory)
    _files(root / "pids", {"cgroup.procs": ""})
    _files(root / cpuacct, {"cgroup.procs": "", "cpuacct.usage": "123456789\n"})
    if freezer:
        _files(root / "freezer", {"cgroup.procs": ""})
    return root


def _fake_v2(
    root: Path,
    *,
    controllers: str = "cpuset cpu io memory hugetlb pids rdma misc",
    swap: bool = True,
) -> Path:
    _files(
        root,
        {
            "cgroup.controllers": controllers + "\n",
            "cgroup.subtree_control": "",
            "cgroup.procs": "",
            "cpu.stat": "usage_usec 1\n",
        },
    )
    parent = {"cgroup.procs": "", "cgroup.kill": "", "memory.max": "max\n"}
    if swap:
        parent["memory.swap.max"] = "max\n"
    _files(root / "rustbox", parent)
    return root


# -- values ---------------------------------------------------------------------


def test_limits_are_validated() -> None:
    with pytest.raises(InvalidInput, match="memory"):
        CgroupLimits(memory=0, pids=1)
    with pytest.raises(InvalidInput, match="pids"):
        CgroupLimits(memory=MiB, pids=-1)
    with pytest.raises(InvalidInput):
        CgroupLimits(memory=True, pids=1)


# -- detection ------------------------------------------------------------------


def test_detect_v1(tmp_path: Path) -> None:
    root = _fake_v1(tmp_path / "cg")
    tree = CgroupTree.detect(str(root), _meminfo=_meminfo(tmp_path, 0))
    assert tree.version == 1
    assert tree.controllers == ("memory", "pids", "cpuacct", "freezer")
    for hierarchy in ("memory", "pids", "cpuacct", "freezer"):
        assert (root / hierarchy / "rustbox").is_dir()
    info = tree.describe()
    assert info["version"] == 1
    assert info["kill"] == "freezer"
    assert info["swap_limit"] == "memory.memsw.limit_in_bytes"
    assert info["paths"] == {
        key: str(root / key / "rustbox") for key in ("memory", "pids", "cpuacct", "freezer")
    }


def test_detect_v1_without_freezer_kills_with_signals(tmp_path: Path) -> None:
    tree = CgroupTree.detect(str(_fake_v1(tmp_path / "cg", freezer=False)))
    assert tree.controllers == ("memory", "pids", "cpuacct")
    assert tree.describe()["kill"] == "signal-loop"


@pytest.mark.parametrize("joint", ["cpu,cpuacct", "cpuacct,cpu"])
def test_detect_v1_joint_cpu_cpuacct(tmp_path: Path, joint: str) -> None:
    root = _fake_v1(tmp_path / "cg", cpuacct=joint)
    (root / "cpu").mkdir()  # a bare dir (or symlink) named cpu must not confuse detection
    tree = CgroupTree.detect(str(root))
    paths = tree.describe()["paths"]
    assert isinstance(paths, dict)
    assert paths["cpuacct"] == str(root / joint / "rustbox")
    assert (root / joint / "rustbox").is_dir()


def test_detect_v1_names_every_missing_hierarchy(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    _files(root / "freezer", {"cgroup.procs": ""})
    (root / "memory").mkdir()  # mount point without a mounted hierarchy
    with pytest.raises(HostUnsupported) as info:
        CgroupTree.detect(str(root))
    assert info.value.missing == (
        f"cgroup v1: no memory hierarchy at {root}/memory",
        f"cgroup v1: no pids hierarchy at {root}/pids",
        f"cgroup v1: no cpuacct hierarchy at {root}/cpuacct or {root}/cpu,cpuacct",
    )
    assert not (root / "freezer" / "rustbox").exists()  # nothing created on failure


def test_detect_v2(tmp_path: Path) -> None:
    root = _fake_v2(tmp_path / "cg")
    tree = CgroupTree.detect(str(root), "rustbox")
    assert tree.version == 2
    assert tree.controllers == ("memory", "pids")
    assert (root / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert (root / "rustbox" / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert tree.describe() == {
        "version": 2,
        "controllers": ["memory", "pids"],
        "paths": {"unified": str(root / "rustbox")},
        "kill": "cgroup.kill",
        "swap_limit": "memory.swap.max",
    }


def test_detect_v2_enables_only_what_is_missing(tmp_path: Path) -> None:
    root = _fake_v2(tmp_path / "cg")
    (root / "cgroup.subtree_control").write_text("cpu memory pids\n")
    (root / "rustbox" / "cgroup.subtree_control").write_text("memory\n")
    CgroupTree.detect(str(root))
    assert (root / "cgroup.subtree_control").read_text() == "cpu memory pids\n"
    assert (root / "rustbox" / "cgroup.subtree_control").read_text() == "+pids"


def test_detect_v2_nested_parent_delegates_at_every_level(tmp_path: Path) -> None:
    root = _fake_v2(tmp_path / "cg")
    tree = CgroupTree.detect(str(root), "system.slice/rustbox")
    for level in (root, root / "system.slice", root / "system.slice" / "rustbox"):
        assert (level / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert tree.describe()["paths"] == {"unified": str(root / "system.slice" / "rustbox")}


def test_detect_v2_missing_controller(tmp_path: Path) -> None:
    root = _fake_v2(tmp_path / "cg", controllers="cpuset cpu io memory")
    with pytest.raises(HostUnsupported) as info:
        CgroupTree.detect(str(root))
    assert info.value.missing == (
        f"cgroup v2: controller 'pids' not available in {root}/cgroup.controllers",
    )
    assert "pids" in str(info.value)


def test_detect_v2_prefers_v2_over_v1_dirs(tmp_path: Path) -> None:
    root = _fake_v2(tmp_path / "cg")
    _fake_v1(root)  # stray v1-looking dirs must not matter
    assert CgroupTree.detect(str(root)).version == 2


@pytest.mark.parametrize("parent", ["", "/abs", "a/../b", "."])
def test_detect_rejects_bad_parent(tmp_path: Path, parent: str) -> None:
    with pytest.raises(InvalidInput):
        CgroupTree.detect(str(_fake_v2(tmp_path / "cg")), parent)


def test_tree_pickles(tmp_path: Path) -> None:
    """The tree travels to the launcher inside a run spec."""
    tree = CgroupTree.detect(str(_fake_v1(tmp_path / "cg")))
    copy = pickle.loads(pickle.dumps(tree))
    assert copy.describe() == tree.describe()


# -- create: limit files ----------------------------------------------------------


def test_create_v1_writes_limits(tmp_path: Path) -> None:
    root = _fake_v1(tmp_path / "cg")
    tree = CgroupTree.detect(str(root), _meminfo=_meminfo(tmp_path, 0))
    group = tree.create("run1", LIMITS)
    try:
        assert isinstance(group, Cgroup)
        assert (group.name, group.version) == ("run1", 1)
        memory = root / "memory" / "rustbox" / "run1"
        assert (memory / "memory.limit_in_bytes").read_text() == str(256 * MiB)
        assert (memory / "memory.memsw.limit_in_bytes").read_text() == str(256 * MiB)
        assert (root / "pids" / "rustbox" / "run1" / "pids.max").read_text() == "10"
        assert (root / "cpuacct" / "rustbox" / "run1").is_dir()
        assert (root / "freezer" / "rustbox" / "run1").is_dir()
        assert tree.children() == ["run1"]
    finally:
        group.close()


def test_create_v1_without_memsw_needs_no_swap(tmp_path: Path) -> None:
    root = _fake_v1(tmp_path / "cg", memsw=False)
    # Without swap, the memory limit alone is a hard limit: allowed.
    tree = CgroupTree.detect(str(root), _meminfo=_meminfo(tmp_path, 0))
    assert tree.describe()["swap_limit"] is None
    group = tree.create("run1", LIMITS)
    group.close()
    memory = root / "memory" / "rustbox" / "run1"
    assert (memory / "memory.limit_in_bytes").read_text() == str(256 * MiB)
    assert not (memory / "memory.memsw.limit_in_bytes").exists()

    # With swap, it is not: strict mode refuses, before creating anything.
    tree = CgroupTree.detect(str(root), _meminfo=_meminfo(tmp_path, 2048))
    with pytest.raises(HostUnsupported, match=r"memsw\.limit_in_bytes missing.*2048 kB"):
        tree.create("run2", LIMITS)
    assert not (root / "memory" / "rustbox" / "run2").exists()


def test_create_v2_writes_limits(tmp_path: Path) -> None:
    root = _fake_v2(tmp_path / "cg")
    tree = CgroupTree.detect(str(root))
    group = tree.create("run1", CgroupLimits(memory=64 * MiB, pids=4))
    try:
        assert group.version == 2
        directory = root / "rustbox" / "run1"
        assert (directory / "memory.max").read_text() == str(64 * MiB)
        assert (directory / "memory.swap.max").read_text() == "0"
        assert (directory / "memory.oom.group").read_text() == "1"
        assert (directory / "pids.max").read_text() == "4"
    finally:
        group.close()


def test_create_v2_without_swap_file(tmp_path: Path) -> None:
    root = _fake_v2(tmp_path / "cg", swap=False)
    tree = CgroupTree.detect(str(root), _meminfo=_meminfo(tmp_path, 1024))
    with pytest.raises(HostUnsupported, match=r"memory\.swap\.max missing.*1024 kB"):
        tree.create("run1", LIMITS)
    tree = CgroupTree.detect(str(root), _meminfo=_meminfo(tmp_path, 0))
    tree.create("run1", LIMITS).close()
    assert not (root / "rustbox" / "run1" / "memory.swap.max").exists()


def test_create_rejects_bad_names(tmp_path: Path) -> None:
    tree = CgroupTree.detect(str(_fake_v2(tmp_path / "cg")))
    for name in ["", ".", "..", "a/b", "x\0"]:
        with pytest.raises(InvalidInput):
            tree.create(name, LIMITS)


def test_open_and_children(tmp_path: Path) -> None:
    root = _fake_v1(tmp_path / "cg")
    tree = CgroupTree.detect(str(root))
    assert tree.open("nope") is None
    tree.create("a", LIMITS).close()
    # Half-created leftover (a crash between mkdirs): listed, but open() wants all.
    (root / "pids" / "rustbox" / "b").mkdir()
    assert tree.children() == ["a", "b"]
    assert tree.open("b") is None
    group = tree.open("a")
    assert group is not None
    group.close()
    group.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        group.stats()


# -- stats ----------------------------------------------------------------------------


def test_stats_v1(tmp_path: Path) -> None:
    root = _fake_v1(tmp_path / "cg")
    tree = CgroupTree.detect(str(root))
    group = tree.create("run1", LIMITS)
    try:
        _files(
            root / "memory" / "rustbox" / "run1",
            {
                "memory.max_usage_in_bytes": "33554432\n",
                "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
                "memory.failcnt": "17\n",
                "memory.memsw.failcnt": "3\n",
            },
        )
        _files(root / "pids" / "rustbox" / "run1", {"pids.events": "max 5\n", "pids.peak": "4\n"})
        _files(root / "cpuacct" / "rustbox" / "run1", {"cpuacct.usage": "200123456\n"})
        assert group.cpu_usage_ns() == 200123456
        assert group.stats() == CgroupStats(
            memory_peak=33554432,
            cpu_usage_ns=200123456,
            oom_kills=2,
            pids_limit_hits=5,
            pids_peak=4,
            memory_limit_hits=20,
        )
        # cpu_usage_ns() preads a kept fd: a rewrite is seen without reopening.
        (root / "cpuacct" / "rustbox" / "run1" / "cpuacct.usage").write_text("300000000\n")
        assert group.cpu_usage_ns() == 300000000
    finally:
        group.close()


def test_stats_v1_old_kernel_files_missing(tmp_path: Path) -> None:
    root = _fake_v1(tmp_path / "cg")
    group = CgroupTree.detect(str(root)).create("run1", LIMITS)
    try:
        _files(
            root / "memory" / "rustbox" / "run1",
            {"memory.max_usage_in_bytes": "4096\n", "memory.failcnt": "0\n"},
        )
        _files(root / "cpuacct" / "rustbox" / "run1", {"cpuacct.usage": "0\n"})
        stats = group.stats()
        assert stats.pids_peak is None
        assert (stats.oom_kills, stats.pids_limit_hits, stats.memory_peak) == (0, 0, 4096)
    finally:
        group.close()


def test_stats_v2(tmp_path: Path) -> None:
    root = _fake_v2(tmp_path / "cg")
    group = CgroupTree.detect(str(root)).create("run1", LIMITS)
    try:
        _files(
            root / "rustbox" / "run1",
            {
                "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 1\n",
                "memory.peak": "268435456\n",
                "cpu.stat": (
                    "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n"
                    "nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n"
                ),
                "pids.events": "max 2\n",
            },
        )
        assert group.stats() == CgroupStats(
            memory_peak=268435456,
            cpu_usage_ns=1234000,
            oom_kills=1,
            pids_limit_hits=2,
            pids_peak=None,  # no pids.peak file: an older kernel
            memory_limit_hits=3,
        )
    finally:
        group.close()


def test_attach_self_writes_zero_everywhere(tmp_path: Path) -> None:
    root = _fake_v1(tmp_path / "cg")
    group = CgroupTree.detect(str(root)).create("run1", LIMITS)
    try:
        group.attach_self()
    finally:
        group.close()
    for hierarchy in ("memory", "pids", "cpuacct", "freezer"):
        assert (root / hierarchy / "rustbox" / "run1" / "cgroup.procs").read_text() == "0"


def test_is_empty_v2_reads_populated(tmp_path: Path) -> None:
    root = _fake_v2(tmp_path / "cg")
    group = CgroupTree.detect(str(root)).create("run1", LIMITS)
    try:
        events = root / "rustbox" / "run1" / "cgroup.events"
        events.write_text("populated 1\nfrozen 0\n")
        assert not group.is_empty()
        events.write_text("populated 0\nfrozen 0\n")
        assert group.is_empty()
    finally:
        group.close()
