"""What each configuration of a starting deployment waits for, from Serve's status and Ray's placement groups.

Pure: `deploy.wait_ready` reads the two tables and hands the result to a caller's callback, which prints it
(the command line) or records it (`parallax up`'s daemon), so the library stays free of I/O.
"""

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigProgress:
    """One deployment of the application while it starts: its replicas and what holds the others back."""

    name: str              # the configuration (or `ingress`, `routing-store`)
    wanted: int            # replicas asked for
    running: int
    pending_gpus: int      # replicas whose placement group Ray has not placed yet: GPUs/CPUs are short
    status: str            # Serve's deployment status (UPDATING, HEALTHY, UNHEALTHY, DEPLOY_FAILED …)
    message: str = ""      # the first sentence of Serve's message about it, if any

    @property
    def waiting_for(self) -> str:
        """In words: what the replicas that do not run yet wait for."""
        if self.running >= self.wanted:
            return ""
        starting = self.wanted - self.running - self.pending_gpus
        parts = []
        if self.pending_gpus:
            parts.append(f"{self.pending_gpus} for GPUs/CPUs (placement group pending)")
        if starting > 0:
            parts.append(f"{starting} starting (engine: model download, weight loading, compilation)")
        return "; ".join(parts)

    def line(self) -> str:
        """`tp8: 0/1 running, 1 starting (…) — Serve: …`"""
        text = f"{self.name}: {self.running}/{self.wanted} running"
        if self.waiting_for:
            text += f", {self.waiting_for}"
        if self.status in ("UNHEALTHY", "DEPLOY_FAILED"):
            text += f" [{self.status}]"
        return text + (f"; Serve: {self.message}" if self.message else "")


def config_progress(name: str, wanted: int, replica_states: Mapping[str, int], status: str, message: str,
                    placement_states: list[str]) -> ConfigProgress:
    """One deployment's progress from Serve's replica state counts and the states of its replicas'
    placement groups (PENDING until Ray finds the GPUs, then CREATED)."""
    first = message.strip().splitlines()[0].split(". ")[0] if message.strip() else ""
    return ConfigProgress(name=name, wanted=wanted, running=int(replica_states.get("RUNNING", 0)),
                          pending_gpus=sum(1 for s in placement_states if s == "PENDING"), status=status,
                          message=first)
