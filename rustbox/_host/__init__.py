"""Host resources a run borrows: a cgroup and an unprivileged uid.

``rustbox._host._probe`` (``rustbox check``) is not re-exported: this package is
imported by the launcher, whose heap every run forks, and the probe pulls in
subprocess, json and platform.
"""

from rustbox._host._cgroup import Cgroup, CgroupLimits, CgroupParents, CgroupStats, CgroupTree
from rustbox._host._uidpool import UidLease, UidPool, UidPoolExhausted

__all__ = [
    "Cgroup",
    "CgroupLimits",
    "CgroupParents",
    "CgroupStats",
    "CgroupTree",
    "UidLease",
    "UidPool",
    "UidPoolExhausted",
]
