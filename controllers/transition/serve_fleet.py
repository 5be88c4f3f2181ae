"""The repartition policy's fleet on Ray Serve: each transition step carried out by deployments/fleet.py within
its bound, and the start times the transition planner prices new configurations with.

Bounds (wall seconds): a `Drain` (and a `Scale` down, which drains the replicas it removes) waits at most
`DRAIN_BOUND_S` — the figure the planner prices a drain at (cost.py: the estimate is the executor's bound), so
one definition serves both; a drain past it fails the step and the executor rolls back. Every other step waits
at most the scenario's `server.deploy_timeout_s` (a `Deploy` starts replicas, as the first deployment did).

Start times: `deployments.startup.start_seconds` — the modelled start (`engine.startup_s` for the simulated
engine), or, on vLLM, the start the fleet measured for a configuration once it was deployed.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from deployments import fleet
from deployments.resolve import Resolved
from deployments.startup import start_seconds
from deployments.steps import Deploy, Drain, Remove, Scale, Step
from schema.deployment import ParallelConfig

# The longest a configuration's in-flight requests may take to finish once it has weight 0. Not measured here:
# bench/repartition_decisions.py's default, a request of a few thousand tokens at tens of ms per token.
DRAIN_BOUND_S = 30.0


@dataclass
class ServeFleet:
    """`controllers.transition.execute.Fleet` over the running Serve applications."""

    resolved: Resolved
    drain_s: float = DRAIN_BOUND_S
    measured: dict[str, float] = field(default_factory=dict)   # vLLM: a configuration's measured start
    # told the configurations serving after every step that changed them (their GPUs, for the recording rules)
    on_set: Callable[[list[ParallelConfig]], object] = lambda _: None

    def timeout_s(self, step: Step) -> float:
        """How long `step` may take before it fails (module docstring)."""
        draining = isinstance(step, Drain) or (isinstance(step, Scale) and step.replicas < self._replicas(step.name))
        return self.drain_s if draining else self.resolved.scenario.resolved_deploy_timeout_s

    def _replicas(self, name: str) -> int:
        config = fleet.serving_set().configs.get(name)
        return config.replicas if config is not None else 0

    def execute(self, step: Step) -> float:
        took = fleet.execute(step, self.resolved, self.timeout_s(step))
        if isinstance(step, Deploy) and self.resolved.scenario.engine.kind == "vllm":
            self.measured[step.config.name] = took
        if isinstance(step, (Deploy, Scale, Remove)):
            self.on_set(list(fleet.serving_set().configs.values()))
        return took

    def start_s(self, config: ParallelConfig) -> float:
        """The planner's `StartSeconds`: measured where the fleet measured it, else modelled."""
        return start_seconds(self.resolved, self.measured)(config)
