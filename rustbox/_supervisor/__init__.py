"""The supervisor: runs in the caller's event loop and owns every run's lifecycle."""

from rustbox._supervisor._inputs import File
from rustbox._supervisor._supervisor import Supervisor, run

__all__ = ["File", "Supervisor", "run"]
