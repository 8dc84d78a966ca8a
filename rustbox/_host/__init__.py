"""Host resources a run borrows: a cgroup and an unprivileged uid."""

from rustbox._host._cgroup import Cgroup, CgroupLimits, CgroupStats, CgroupTree
from rustbox._host._probe import HostReport, probe_host
from rustbox._host._uidpool import UidLease, UidPool, UidPoolExhausted

__all__ = [
    "Cgroup",
    "CgroupLimits",
    "CgroupStats",
    "CgroupTree",
    "HostReport",
    "UidLease",
    "UidPool",
    "UidPoolExhausted",
    "probe_host",
]
