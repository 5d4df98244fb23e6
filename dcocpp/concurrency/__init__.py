"""Small trio idioms with names, for every layer that runs on trio.

`Pulse` wakes everyone waiting for a change; `WakeUp` is a flag that one task waits for and
clears (`wakeups`); `RestartableTask` is a task that a new run replaces, each run under a
cancel scope of its own (`tasks`). A leaf: it imports only trio.

Errors: none of its own; trio's (`trio.Cancelled`) pass through.
"""

from dcocpp.concurrency.tasks import RestartableTask
from dcocpp.concurrency.wakeups import Pulse, WakeUp

__all__ = ["Pulse", "RestartableTask", "WakeUp"]
