"""An analytic cost model for the scheduler's tests: exact, so assertions can be exact."""

from deployments.engines.sim.work import BatchShape, StepCost


class LinearCost:
    """Each pipeline stage takes `step_s + token_s × tokens`; a pass crosses `stages` of them."""

    def __init__(self, step_s: float = 0.010, token_s: float = 0.0001, stages: int = 1):
        self.step_s = step_s
        self.token_s = token_s
        self.stages = stages
        self.shapes: list[BatchShape] = []

    def step(self, batch: BatchShape) -> StepCost:
        self.shapes.append(batch)
        stage = self.step_s + self.token_s * batch.num_tokens
        terms = {"fixed": self.step_s * self.stages, "tokens": self.token_s * batch.num_tokens * self.stages}
        return StepCost(latency_s=stage * self.stages, stage_s=stage, terms=terms)
