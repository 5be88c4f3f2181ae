"""Files vLLM's CPU workers leave behind (shared-memory segments, distributed-init files), and their removal.

Only files that appeared since a snapshot and that no live process still has open or mapped are removed,
so another engine running beside this one keeps its own.
"""

import glob
import os
from pathlib import Path

LEFTOVER_PATTERNS = ("/dev/shm/psm_*", "/dev/shm/vllm*", "/dev/shm/sem.mp-*", "/tmp/vllm_dist_*")


def snapshot_leftovers(patterns: tuple[str, ...] = LEFTOVER_PATTERNS) -> set[str]:
    """The leftover-style files that exist now."""
    return {p for pattern in patterns for p in glob.glob(pattern)}


def files_in_use() -> set[str]:
    """Paths some live process holds open or memory-mapped (those we may read in /proc)."""
    used: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                used.add(os.readlink(fd))
            with open(proc / "maps") as maps:
                for line in maps:
                    parts = line.split(maxsplit=5)
                    if len(parts) == 6:
                        used.add(parts[5].strip().removesuffix(" (deleted)"))
        except OSError:
            continue  # the process ended, or is not ours to read
    return used


def remove_leftovers(before: set[str], patterns: tuple[str, ...] = LEFTOVER_PATTERNS) -> list[str]:
    """Remove leftover files created since `before` that nobody uses any more; return their paths."""
    candidates = snapshot_leftovers(patterns) - before
    if not candidates:
        return []
    busy = files_in_use()
    removed = []
    for path in sorted(candidates - busy):
        try:
            if os.path.isdir(path):
                continue
            os.remove(path)
            removed.append(path)
        except FileNotFoundError:
            continue
    return removed
