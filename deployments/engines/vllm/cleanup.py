"""Files vLLM's CPU workers leave behind (shared-memory segments, distributed-init files), and their removal.

Only files that appeared since a snapshot and that no live process still has open or mapped are removed,
so another engine running beside this one keeps its own. A file counts as in use by its inode, not its
name: glibc's sem_open maps a semaphore under a temporary name it then renames to /dev/shm/sem.mp-*, so
/proc/PID/maps never names a live multiprocessing semaphore (deleting it broke a neighbour's worker start:
FileNotFoundError in SemLock._rebuild).
"""

import contextlib
import glob
import os
from pathlib import Path

LEFTOVER_PATTERNS = ("/dev/shm/psm_*", "/dev/shm/vllm*", "/dev/shm/sem.mp-*", "/tmp/vllm_dist_*")


def snapshot_leftovers(patterns: tuple[str, ...] = LEFTOVER_PATTERNS) -> set[str]:
    """The leftover-style files that exist now."""
    return {p for pattern in patterns for p in glob.glob(pattern)}


FileId = tuple[int, int]  # (st_dev, st_ino)


def _file_id(path: str | Path) -> FileId:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def files_in_use() -> set[FileId]:
    """(device, inode) of the files some live process holds open or memory-mapped (those we may read in /proc)."""
    used: set[FileId] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    used.add(_file_id(fd))
            with open(proc / "maps") as maps:
                for line in maps:
                    parts = line.split(maxsplit=5)
                    if len(parts) == 6 and parts[4] != "0":  # address, perms, offset, device, inode, path
                        major, minor = parts[3].split(":")
                        used.add((os.makedev(int(major, 16), int(minor, 16)), int(parts[4])))
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
    for path in sorted(candidates):
        try:
            if os.path.isdir(path) or _file_id(path) in busy:
                continue
            os.remove(path)
            removed.append(path)
        except FileNotFoundError:
            continue
    return removed
