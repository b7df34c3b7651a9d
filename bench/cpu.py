"""CPU time of every process a task passes through, read from /proc: the producer (this
process), the worker processes, their supervisor, PostgreSQL and Redis.

PostgreSQL runs a backend process per connection, and with ``CONN_MAX_AGE = 0`` backends come
and go during a run: the postmaster's own time, the time of its live children and the time of
those that exited (its ``cutime``/``cstime``, counted once the postmaster reaps them) together
stay right across that churn.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import urlparse

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    comm_end = text.rindex(")")
    # fields[0] is the state (field 3 of proc(5)); utime, stime, cutime, cstime are 14-17.
    return [text[text.index("(") + 1:comm_end], *text[comm_end + 2:].split()]


def _seconds(fields: list[str], children: bool = False) -> float:
    ticks = int(fields[12]) + int(fields[13])
    if children:
        ticks += int(fields[14]) + int(fields[15])
    return ticks / TICKS


def _all_processes() -> dict[int, list[str]]:
    processes = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None:
                processes[int(entry.name)] = fields
    return processes


def _postmaster(processes: dict[int, list[str]]) -> int | None:
    for pid, fields in processes.items():
        parent = processes.get(int(fields[2]))
        if fields[0] in ("postgres", "postmaster") and (parent is None or parent[0] not in ("postgres", "postmaster")):
            return pid
    return None


def _redis_server(url: str) -> int | None:
    port = str(urlparse(url).port or 6379)
    for pid, fields in _all_processes().items():
        if fields[0] == "redis-server":
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if f":{port}" in args or (port == "6379" and ":" not in args):
                return pid
    return None


class Meter:
    """Reads the CPU seconds used so far by each part; :meth:`since` gives the difference."""

    PARTS = ("producer", "workers", "supervisor", "postgresql", "redis")

    def __init__(self, workers: list[int], supervisor: int, redis_url: str) -> None:
        self.workers = workers
        self.supervisor = supervisor
        self.redis = _redis_server(redis_url)

    def read(self) -> dict[str, float]:
        processes = _all_processes()
        postmaster = _postmaster(processes)
        postgres = 0.0
        if postmaster is not None:
            postgres = _seconds(processes[postmaster], children=True) + sum(
                _seconds(fields) for fields in processes.values() if int(fields[2]) == postmaster)

        def own(pid: int | None) -> float:
            fields = processes.get(pid) if pid is not None else None
            return 0.0 if fields is None else _seconds(fields)

        return {"producer": time.process_time(), "workers": sum(own(pid) for pid in self.workers),
                "supervisor": own(self.supervisor), "postgresql": postgres, "redis": own(self.redis)}

    @staticmethod
    def since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {part: after[part] - before[part] for part in before}
