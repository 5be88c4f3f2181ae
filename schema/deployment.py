"""Configuration of what is deployed: model, dtype, hardware, engine and the parallel configurations."""

from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schema.dtypes import Dtype, parse_dtype

# How the KV cache is sized (deployments/catalog/memory.py): as vLLM does, or as the study counts memory.
MemoryModel = Literal["vllm", "study"]

# The scenario as a run folder keeps it (`parallax run` writes it; calibrate and the report read it).
SCENARIO_FILE = "scenario.yaml"

# How long `parallax up` / `run` wait for every configuration to serve, per engine, unless
# `server.deploy_timeout_s` says otherwise. The simulated engine starts in seconds. vLLM downloads the
# weights on every node, loads them, compiles and captures CUDA graphs: many minutes for a 70B or 405B
# model; one hour is Ray Serve LLM's own engine start limit (ENGINE_START_TIMEOUT_S in
# ray/llm/_internal/serve/constants.py).
DEFAULT_DEPLOY_TIMEOUT_S = {"sim": 120.0, "vllm": 3600.0}


def shape_label(tp: int, pp: int) -> str:
    """How a replica's parallel shape is written everywhere: `TP4`, `PP2`, `TP2×PP2`."""
    return f"TP{tp}" if pp == 1 else f"PP{pp}" if tp == 1 else f"TP{tp}×PP{pp}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Hardware(_Strict):
    gpu: str = Field(description="GPU catalog name, or a path to a YAML GPU spec")
    gpus_per_node: int = Field(default=8, gt=0)
    nodes: int = Field(default=1, gt=0)

    @property
    def total_gpus(self) -> int:
        return self.gpus_per_node * self.nodes


# The role of a replica of a disaggregated configuration: prefill replicas compute each prompt and its first
# token, then hand the prompt's KV cache to a decode replica, which generates the rest.
Role = Literal["prefill", "decode"]
ROLES: tuple[Role, ...] = ("prefill", "decode")


class RoleConfig(_Strict):
    """The replicas of one role of a disaggregated configuration: TP×PP GPUs each, `replicas` copies."""

    tp: int = Field(default=1, gt=0)
    pp: int = Field(default=1, gt=0)
    replicas: int = Field(default=1, gt=0)


class Disaggregation(_Strict):
    """Prefill/decode disaggregation: `prefill` replicas compute the prompts (and first tokens), `decode`
    replicas receive each prompt's KV cache and generate the rest of the output."""

    prefill: RoleConfig
    decode: RoleConfig


class ReplicaGroup(NamedTuple):
    """Replicas of one TP×PP shape inside a configuration: the only group of an aggregated configuration
    (`role` None: every replica prefills and decodes), or one role of a disaggregated one."""

    role: Role | None
    tp: int
    pp: int
    replicas: int
    spread_pp_over_nodes: bool = False

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp

    @property
    def gpus(self) -> int:
        return self.gpus_per_replica * self.replicas

    @property
    def field(self) -> str:
        """Where a scenario sets this group's shape, relative to its configuration ('' or 'disagg.ROLE.')."""
        return "" if self.role is None else f"disagg.{self.role}."

    def label(self, config: str) -> str:
        """The group in a message: 'tp2 (tp2×pp1)', "pd's prefill role (tp4×pp1)"."""
        role = f"'s {self.role} role" if self.role else ""
        return f"{config}{role} (tp{self.tp}×pp{self.pp})"


class ParallelConfig(_Strict):
    """One candidate deployment: TP×PP GPUs per replica, `replicas` data-parallel copies; or, with `disagg`,
    prefill and decode replicas of their own shapes."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=48)
    tp: int = Field(default=1, gt=0)
    pp: int = Field(default=1, gt=0)
    replicas: int = Field(default=1, gt=0)
    spread_pp_over_nodes: bool = Field(
        default=False, description="allow PP stages on different nodes (STRICT_PACK otherwise)"
    )
    disagg: Disaggregation | None = Field(
        default=None, description="prefill/decode disaggregation: {prefill: {tp, pp, replicas}, decode: {tp, pp, "
        "replicas}} instead of the top-level tp, pp and replicas"
    )

    @model_validator(mode="after")
    def _one_shape(self) -> "ParallelConfig":
        if self.disagg is not None:
            top = [f"{k}={getattr(self, k)}" for k in ("tp", "pp", "replicas") if getattr(self, k) != 1]
            if top:
                raise ValueError(f"{', '.join(top)} and disagg both given: a disaggregated configuration sets tp, pp "
                                 "and replicas per role (disagg.prefill, disagg.decode); remove the top-level ones")
        return self

    @property
    def groups(self) -> tuple[ReplicaGroup, ...]:
        """Its replicas by shape: one group (aggregated), or the prefill and the decode role."""
        if self.disagg is None:
            return (ReplicaGroup(None, self.tp, self.pp, self.replicas, self.spread_pp_over_nodes),)
        return tuple(ReplicaGroup(role, r.tp, r.pp, r.replicas, self.spread_pp_over_nodes)
                     for role, r in ((role, getattr(self.disagg, role)) for role in ROLES))

    @property
    def gpus_per_replica(self) -> int:
        """GPUs of one replica of an aggregated configuration (a disaggregated one has one shape per role:
        see `groups`)."""
        return self.tp * self.pp

    @property
    def gpus(self) -> int:
        """Every GPU the configuration holds, all replicas of every role."""
        return sum(g.gpus for g in self.groups)

    @property
    def num_replicas(self) -> int:
        """Replicas of every role."""
        return sum(g.replicas for g in self.groups)


class EngineConfig(_Strict):
    """Engine choice and the vLLM-style scheduling knobs both engines share."""

    kind: Literal["sim", "vllm"] = "sim"
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    memory_model: MemoryModel = Field(
        default="vllm", description="sim only: how the KV cache is sized — 'vllm' (gpu_memory_utilization, "
        "activation reserve) or 'study' (all HBM for weights and KV cache, as arXiv 2603.05692 counts)"
    )
    max_num_seqs: int = Field(default=256, gt=0)
    max_num_batched_tokens: int = Field(default=8192, gt=0)
    block_size: int = Field(default=16, gt=0)
    max_model_len: int | None = Field(default=None, gt=0)
    calibration: str | None = Field(
        default=None, description="sim only: YAML overriding the performance model's per-family constants"
    )
    time_scale: float = Field(
        default=1.0, gt=0, description="sim only: wall seconds per simulated second (>1 slows the clock)"
    )
    stream_interval_ms: float = Field(
        default=0.0, ge=0, description="coalesce streamed tokens into one SSE event per interval"
    )
    startup_s: float | None = Field(
        default=None, ge=0, description="sim only: engine-clock seconds a replica that joins a running fleet "
        "takes to become ready (default: its weights per GPU ÷ the GPU's host-to-device bandwidth, plus "
        "deployments/startup.py's warm-up)"
    )
    model_path: str | None = Field(default=None, description="vllm only: local model folder")
    engine_args: dict[str, Any] = Field(default_factory=dict, description="vllm only: extra engine args")
    seed: int = 0

    @model_validator(mode="after")
    def _memory_model(self) -> "EngineConfig":
        if self.memory_model == "study" and self.kind == "vllm":
            raise ValueError("memory_model: 'study' sizes a simulated engine's KV cache; vLLM sizes its own "
                             "(use gpu_memory_utilization)")
        default = type(self).model_fields["gpu_memory_utilization"].default
        if self.memory_model == "study" and self.gpu_memory_utilization != default:
            raise ValueError("gpu_memory_utilization does not apply with memory_model: 'study' (it counts all "
                             "HBM); give one of the two")
        return self

    @property
    def clock_scale(self) -> float:
        """Wall seconds per second of the engine's clock: `time_scale` for the simulated engine, 1 for a real
        one. Every latency and rate Parallax reports is on the engine's clock: wall ÷ clock_scale."""
        return self.time_scale if self.kind == "sim" else 1.0


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    metrics_port: int = Field(default=8080, ge=0, le=65535, description="Ray's metrics export port")
    default_class: str | None = None
    max_ongoing_requests: int = Field(default=1024, gt=0)
    max_queued_requests: int = Field(
        default=64, gt=0, description="requests queued at the ingress per configuration beyond its replicas' "
        "max_ongoing_requests; more are refused with 503"
    )
    api_key_env: str | None = Field(default=None, description="env var holding an optional Bearer key")
    ingress_replicas: int = Field(
        default=1, gt=0, description="replicas of the ingress; they share one versioned routing (clients "
        "spread requests over their addresses, or Serve's proxy does)"
    )
    direct_ingress: bool = Field(
        default=True, description="the ingress replicas serve HTTP on ports of their own (Serve's direct "
        "ingress), so clients skip Serve's proxy; `port` still answers through the proxy"
    )
    deploy_timeout_s: float | None = Field(
        default=None, gt=0, description="seconds to wait for every configuration to serve before giving up "
        "(default per engine: 120 for sim, 3600 for vllm, whose start downloads, loads and compiles the model)"
    )
    hold_queue_size: int = Field(
        default=256, gt=0, description="requests of held classes (no configuration routed) each ingress replica "
        "queues while a transition frees their GPUs; more are refused with 503"
    )
    hold_max_wait_s: float = Field(
        default=120.0, gt=0, description="wall seconds a held request waits for a routing before it is refused "
        "with 503"
    )


class DeploymentSpec(_Strict):
    """The deployment half of a scenario."""

    model: str
    dtype: Dtype = Dtype.bf16
    kv_dtype: Dtype | None = Field(default=None, description="default: bf16 (fp32 for fp32 models)")
    hardware: Hardware
    engine: EngineConfig = Field(default_factory=EngineConfig)
    configurations: list[ParallelConfig] = Field(
        default_factory=list, description="what to deploy; optional for `parallax plan`, which proposes them"
    )
    server: ServerConfig = Field(default_factory=ServerConfig)

    @field_validator("dtype", "kv_dtype", mode="before")
    @classmethod
    def _dtype(cls, v: object) -> object:
        return parse_dtype(v) if isinstance(v, str) else v

    @property
    def resolved_deploy_timeout_s(self) -> float:
        """`server.deploy_timeout_s`, else the engine's default (DEFAULT_DEPLOY_TIMEOUT_S)."""
        return self.server.deploy_timeout_s or DEFAULT_DEPLOY_TIMEOUT_S[self.engine.kind]

    @property
    def resolved_kv_dtype(self) -> Dtype:
        if self.kv_dtype is not None:
            return self.kv_dtype
        return Dtype.fp32 if self.dtype == Dtype.fp32 else Dtype.bf16
