"""vLLM's leftover files: removed once no live process holds them, kept while one does (matched by inode)."""

import multiprocessing
import os
from pathlib import Path

from deployments.engines.vllm.cleanup import remove_leftovers


def test_a_live_semaphore_is_kept_though_no_process_maps_it_by_name() -> None:
    lock = multiprocessing.get_context("spawn").Lock()  # what vLLM's executor hands its workers
    path = "/dev/shm/sem" + lock._semlock.name.replace("/", ".")  # type: ignore[attr-defined]
    assert os.path.exists(path)
    assert path not in Path("/proc/self/maps").read_text()  # glibc mapped it under a temporary name
    assert remove_leftovers(set(), patterns=(path,)) == []
    assert os.path.exists(path)


def test_files_nobody_holds_are_removed_and_held_ones_kept() -> None:
    prefix = f"/dev/shm/psm_pxtest{os.getpid()}_"
    free, held = Path(prefix + "free"), Path(prefix + "held")
    free.write_bytes(b"x")
    held.write_bytes(b"x")
    with held.open("rb"):
        assert remove_leftovers(set(), patterns=(prefix + "*",)) == [str(free)]
        assert held.exists() and not free.exists()
    assert remove_leftovers({str(held)}, patterns=(prefix + "*",)) == []  # in the snapshot: not ours
    assert remove_leftovers(set(), patterns=(prefix + "*",)) == [str(held)]
