"""Prefill/decode disaggregation on vLLM: each role's KV connector arguments, and the per-request handoff.

Pure functions, no vLLM import (like args.py): unit-tested, and usable by `parallax validate`.

A prefill replica runs the prompt with max_tokens=1 and `prefill_kv_params` in its request; vLLM returns
the KV's whereabouts in the output's `kv_transfer_params`. `decode_handoff` turns that output into the decode
request's parameters: the same prompt token ids and the returned `kv_transfer_params`, with which the decode
replica loads the prompt's KV instead of recomputing it and generates the whole output. This is the protocol
of vLLM's disaggregated proxy and of Ray Serve LLM's `PDOrchestratorMixin` / `DefaultPDProtocolMixin`
(ray/llm/_internal/serve/engines/vllm/kv_transfer/base.py). DISAGG.md says which connector works where.
"""

from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from deployments.engines.vllm.args import VllmLaunch, launch_for
from schema.deployment import DeploymentSpec, ParallelConfig, Role

# The connectors the testbed drives: NIXL (UCX; GPU memory on GPUs, host memory on the CPU build), and
# vLLM's ExampleConnector (KV written to and read from a shared folder: no extra package, CPU or GPU).
KvConnector = Literal["nixl", "example"]
VLLM_CONNECTOR: dict[KvConnector, str] = {"nixl": "NixlConnector", "example": "ExampleConnector"}
DEFAULT_CONNECTOR: KvConnector = "nixl"

_KV_ROLE: dict[Role, str] = {"prefill": "kv_producer", "decode": "kv_consumer"}

# NIXL's side channel (the handshake that exchanges KV memory descriptors) listens on a TCP port per replica.
# Ray Serve LLM's defaults (NixlConnectorBackend, PDServingArgs): prefill from 20000, decode from 22000, each
# replica `rank × tp × pp` above its role's base, so colocated replicas and TP workers never share one.
NIXL_PORT_BASE: dict[Role, int] = {"prefill": 20000, "decode": 22000}


class HandoffError(RuntimeError):
    """The prefill's output cannot start a decode; the message names the role and what was missing."""


def kv_transfer_config(role: Role, platform: str, connector: KvConnector = DEFAULT_CONNECTOR,
                       storage_path: str | None = None) -> dict[str, Any]:
    """The `kv_transfer_config` engine argument of one role's replicas on `platform` ("cpu" | "gpu")."""
    if role not in _KV_ROLE:
        raise ValueError(f"role {role!r}: a disaggregated configuration has the roles prefill and decode")
    config: dict[str, Any] = {"kv_connector": VLLM_CONNECTOR[connector], "kv_role": _KV_ROLE[role]}
    if connector == "nixl":
        # NIXL registers the KV cache where it lives: GPU memory on GPUs, host memory on the CPU build
        # (vllm/distributed/kv_transfer/kv_connector/v1/nixl/utils.py: _NIXL_SUPPORTED_DEVICE["cpu"]).
        config["kv_buffer_device"] = "cpu" if platform == "cpu" else "cuda"
    elif connector == "example":
        if storage_path is None:
            raise ValueError("the example connector hands KV over through a folder both roles share; "
                             "give storage_path")
        config["kv_connector_extra_config"] = {"shared_storage_path": storage_path}
    else:
        raise ValueError(f"kv connector {connector!r}: choose one of {', '.join(VLLM_CONNECTOR)}")
    return config


def nixl_side_channel(role: Role, tp: int, pp: int, replica_rank: int = 0, host: str = "127.0.0.1",
                      port_base: int | None = None) -> dict[str, str]:
    """The environment that places one replica's NIXL handshake listener (read by vLLM's NIXL connector).

    `host` must be reachable from the other role's replicas: the node's IP on a multi-node cluster
    (Ray Serve LLM uses ray.util.get_node_ip_address()), 127.0.0.1 when both roles share the machine.
    """
    base = NIXL_PORT_BASE[role] if port_base is None else port_base
    return {"VLLM_NIXL_SIDE_CHANNEL_HOST": host,
            "VLLM_NIXL_SIDE_CHANNEL_PORT": str(base + replica_rank * tp * pp)}


def role_launch(spec: DeploymentSpec, config: ParallelConfig, role: Role, *, tp: int, pp: int, platform: str,
                connector: KvConnector = DEFAULT_CONNECTOR, replica_rank: int = 0, host: str = "127.0.0.1",
                port_base: int | None = None, storage_path: str | None = None,
                cores: list[int] | None = None) -> VllmLaunch:
    """Engine kwargs and env of one replica of `config`'s `role`, a tp×pp engine on `platform`.

    Everything args.launch_for derives for a tp×pp replica, served under the configuration's name (the
    ingress sees the pair as one configuration), plus the role's `kv_transfer_config` and, for NIXL, its
    side channel. A `kv_transfer_config` in the scenario's `engine.engine_args` overrides the derived one.
    """
    shape = ParallelConfig(name=config.name, tp=tp, pp=pp, spread_pp_over_nodes=config.spread_pp_over_nodes)
    base = launch_for(spec, shape, platform, cores)
    kwargs = {"kv_transfer_config": kv_transfer_config(role, platform, connector, storage_path),
              **base.engine_kwargs}
    env = dict(base.env)
    if connector == "nixl":
        env.update(nixl_side_channel(role, tp, pp, replica_rank, host, port_base))
    return replace(base, engine_kwargs=kwargs, env=env)


def prefill_kv_params(connector: KvConnector = DEFAULT_CONNECTOR) -> dict[str, Any] | None:
    """The prefill request's `kv_transfer_params` (its SamplingParams.extra_args["kv_transfer_params"]).

    NIXL: keep the prompt's KV for a remote decode instead of freeing it (Ray Serve LLM's
    base_prefill_kv_transfer_params plus remote_host/port, as its DefaultPDProtocolMixin sends).
    ExampleConnector: none; the prefill engine writes every prompt's KV to the shared folder.
    """
    if connector == "nixl":
        return {"do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None,
                "remote_block_ids": None, "remote_host": None, "remote_port": None}
    return None


class PrefillOutput(Protocol):
    """What the handoff reads from the prefill engine's final output (vLLM's RequestOutput has both)."""

    prompt_token_ids: list[int] | None
    kv_transfer_params: dict[str, Any] | None


@dataclass(frozen=True)
class DecodeHandoff:
    """The decode request's parameters: the prompt the prefill computed, token for token, and where its KV is."""

    prompt_token_ids: list[int]
    kv_transfer_params: dict[str, Any] | None


# What a NIXL decode needs from the prefill to pull the KV (vLLM's NIXL pull scheduler, request_finished).
_NIXL_HANDOFF_KEYS = ("do_remote_prefill", "remote_engine_id", "remote_block_ids", "remote_host", "remote_port")


def decode_handoff(prefill: PrefillOutput, connector: KvConnector = DEFAULT_CONNECTOR) -> DecodeHandoff:
    """The decode request's parameters from the prefill engine's final output, or HandoffError."""
    if not prefill.prompt_token_ids:
        raise HandoffError("prefill role returned no prompt token ids: the decode role cannot address its KV")
    params = prefill.kv_transfer_params
    if connector == "nixl":
        missing = [k for k in _NIXL_HANDOFF_KEYS if not params or params.get(k) in (None, False)]
        if missing:
            raise HandoffError(
                f"prefill role returned kv_transfer_params {params!r}, without {', '.join(missing)}: is its engine "
                "started with the NIXL connector as kv_producer (role_launch), and was the request sent with "
                "prefill_kv_params()?")
    return DecodeHandoff(prompt_token_ids=list(prefill.prompt_token_ids),
                         kv_transfer_params=dict(params) if params else None)
