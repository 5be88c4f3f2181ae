"""Helpers of the vLLM tier: the tiny model, leftover checks, and reading a /metrics page."""

import os
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from deployments.engines.vllm.cleanup import snapshot_leftovers

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = REPO / ".cache" / "tiny-llama"  # where scenarios/cpu-vllm-tiny.yaml expects it


def set_cache_env() -> None:
    """Keep vLLM's and torch inductor's caches in the work tree (gitignored .cache/)."""
    os.environ.setdefault("VLLM_CACHE_ROOT", str(REPO / ".cache" / "vllm"))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(REPO / ".cache" / "inductor"))


def vllm_processes() -> set[int]:
    """Pids of vLLM engine-core and worker processes (vLLM names them VLLM::EngineCore, VLLM::Worker_*)."""
    pids = set()
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            text = " ".join([p.info["name"] or "", *(p.info["cmdline"] or [])])
        except psutil.Error:
            continue
        if "VLLM::" in text or "EngineCore" in text:
            pids.add(p.pid)
    return pids


@dataclass(frozen=True)
class Residue:
    """What a vLLM run may leave behind, as a snapshot to compare against."""

    files: frozenset[str]
    processes: frozenset[int]

    @classmethod
    def now(cls) -> "Residue":
        return cls(frozenset(snapshot_leftovers()), frozenset(vllm_processes()))

    def new_since(self, before: "Residue", wait_s: float = 30.0) -> "Residue":
        """What appeared since `before` and is still there after up to `wait_s` seconds."""
        deadline = time.monotonic() + wait_s
        while True:
            now = Residue.now()
            extra = Residue(now.files - before.files, now.processes - before.processes)
            if not (extra.files or extra.processes) or time.monotonic() > deadline:
                return extra
            time.sleep(0.5)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Every sample of a Prometheus text page, keyed by (name, labels)."""
    text = httpx.get(url, timeout=10).text
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def histogram(samples: Samples, name: str, match: dict[str, str]) -> dict[float, float]:
    """Cumulative bucket counts {le: count} of histogram `name` summed over series matching `match`."""
    out: dict[float, float] = {}
    for (n, labels), v in samples.items():
        lab = dict(labels)
        if n == f"{name}_bucket" and all(lab.get(k) == val for k, val in match.items()):
            le = float(lab["le"])
            out[le] = out.get(le, 0.0) + v
    return out

