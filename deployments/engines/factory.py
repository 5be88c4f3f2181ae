"""The engine factory: `EngineConfig.kind` -> an Engine for one replica of one configuration."""

import importlib

from deployments.engines.base import Engine
from deployments.resolve import Resolved
from schema.deployment import ParallelConfig

# kind -> "module:Class"; each takes (spec, parallel config) positionally and model=, gpu= as keywords.
ENGINES = {
    "sim": "deployments.engines.sim.engine:SimEngine",
    "vllm": "deployments.engines.vllm.engine:VllmEngine",
}


def create_engine(resolved: Resolved, config: ParallelConfig) -> Engine:
    """Build (not start) the engine of one replica of `config`."""
    kind = resolved.scenario.engine.kind
    module, _, cls = ENGINES[kind].partition(":")
    engine_cls = getattr(importlib.import_module(module), cls)
    engine: Engine = engine_cls(resolved.scenario, config, model=resolved.model, gpu=resolved.gpu)
    return engine
