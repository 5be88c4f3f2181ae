"""A disaggregated configuration offline: x prefill and y decode replicas, and the KV handoffs between them.

A request goes to the least loaded prefill replica, which computes its prompt, samples its first token and
keeps the prompt's KV cache. The least loaded decode replica then takes it (`EngineCore.submit_handoff`): it
waits for KV blocks there, its KV cache is copied (`KvTransfer`: NVLink / Infinity Fabric inside a node, the
NICs across nodes) and the first token is delivered with it, as the decode side streams the response (vLLM's
proxy, SGLang, Dynamo); it then decodes the rest of its output, and the prefill replica frees its copy. TTFT is
the prefill queueing, the prefill and the handoff (the decode replica's admission wait and the copy); TPOT is
the decode pool's. A one-token request ends at its prefill replica. The records are `run_offline`'s, so
whatever judges those judges these.
"""

from collections.abc import Sequence as Seq

from deployments.catalog.gpus import GpuSpec
from deployments.catalog.models import ModelSpec
from deployments.engines.sim.core import EngineCore
from deployments.engines.sim.kv_transfer import KvTransfer
from deployments.engines.sim.offline import (
    Arrivals,
    OfflineResult,
    RequestRecord,
    RequestSpec,
    least_loaded,
    run_events,
)
from deployments.engines.sim.replica import ReplicaFactory
from deployments.engines.sim.sequence import Sequence
from deployments.placement import role_nodes
from schema.deployment import DeploymentSpec, EngineConfig, ParallelConfig


class DisaggregatedReplicas:
    """The replicas of one disaggregated configuration: `prefill_replicas` of `prefill`, `decode_replicas` of
    `decode`, and `nodes` (each role's node per replica, None for one spread over nodes; default: all on one
    node), which decides the path of every handoff."""

    def __init__(self, prefill: ReplicaFactory, decode: ReplicaFactory, prefill_replicas: int, decode_replicas: int,
                 nodes: tuple[Seq[int | None], Seq[int | None]] | None = None):
        if prefill.role != "prefill" or decode.role != "decode":
            raise ValueError("a disaggregated configuration needs a prefill-role and a decode-role replica factory")
        if prefill_replicas < 1 or decode_replicas < 1:
            raise ValueError("a disaggregated configuration needs at least one prefill and one decode replica")
        self.prefill, self.decode = prefill, decode
        self.prefill_replicas, self.decode_replicas = prefill_replicas, decode_replicas
        p_nodes, d_nodes = nodes or ([0] * prefill_replicas, [0] * decode_replicas)
        if len(p_nodes) != prefill_replicas or len(d_nodes) != decode_replicas:
            raise ValueError("nodes: give one node per prefill replica and one per decode replica")
        perf = decode.cost_model
        paths = {cross: KvTransfer.between(perf.model, perf.gpu, perf.kv_dtype, (prefill.tp, prefill.pp),
                                           (decode.tp, decode.pp), cross, decode.calibration)
                 for cross in (False, True)}
        # The path of every (prefill replica, decode replica) pair.
        self.links = [[paths[p is None or d is None or p != d] for d in d_nodes] for p in p_nodes]

    @classmethod
    def for_deployment(cls, spec: DeploymentSpec, parallel: ParallelConfig, model: ModelSpec,
                       gpu: GpuSpec) -> "DisaggregatedReplicas":
        """The replicas of a scenario's disaggregated configuration, each role built as the live simulated engine
        builds it, its replicas packed on the scenario's nodes in order (`placement.role_nodes`)."""
        if parallel.disagg is None:
            raise ValueError(f"configuration {parallel.name!r} is not disaggregated")
        nodes = role_nodes(parallel, spec.hardware.gpus_per_node)
        return cls(ReplicaFactory.for_deployment(spec, parallel, model, gpu, "prefill"),
                   ReplicaFactory.for_deployment(spec, parallel, model, gpu, "decode"),
                   parallel.disagg.prefill.replicas, parallel.disagg.decode.replicas,
                   (nodes["prefill"], nodes["decode"]))

    @property
    def max_model_len(self) -> int:
        """The longest request (prompt + output) a decode replica holds; a prefill replica holds its prompt and
        first token (`check`)."""
        return self.decode.max_model_len

    @property
    def engine(self) -> EngineConfig:
        """The engine settings both roles share."""
        return self.decode.engine

    @property
    def kv_cache_tokens(self) -> int:
        """KV-cache tokens of one decode replica (the running batches live there)."""
        return self.decode.plan.kv_tokens

    def check(self, prompt_len: int, output_len: int) -> None:
        """ValueError when a request could never be served: its prompt too long for a prefill replica, or
        the whole request for a decode replica."""
        if prompt_len + 1 > self.prefill.max_model_len:
            raise ValueError(f"a {prompt_len}-token prompt and its first token exceed a prefill replica's "
                             f"{self.prefill.max_model_len}-token limit (KV cache / max_model_len); send a shorter one")
        if prompt_len + output_len > self.decode.max_model_len:
            raise ValueError(f"prompt ({prompt_len}) + output ({output_len}) tokens exceed a decode replica's "
                             f"{self.decode.max_model_len}-token limit (KV cache / max_model_len); send a shorter "
                             "request")

    def run(self, requests: Seq[RequestSpec], concurrency: int | None = None) -> OfflineResult:
        """Simulate `requests` (open loop, or `concurrency` users) through fresh replicas; records in request
        order, `cores` the prefill replicas then the decode replicas."""
        if any(r.replica is not None for r in requests):
            raise ValueError("a request names a replica: a disaggregated configuration places each request on a "
                             "prefill and a decode replica itself")
        for r in requests:
            self.check(r.prompt_len, r.output_len)
        arrivals = Arrivals(requests, concurrency)
        pre = [self.prefill() for _ in range(self.prefill_replicas)]
        dec = [self.decode() for _ in range(self.decode_replicas)]
        x = len(pre)
        first: dict[int, Sequence] = {}      # request → its prefill sequence
        last: dict[int, Sequence] = {}       # request → the sequence that produces its last token
        at: dict[int, tuple[int, int]] = {}  # request → (prefill replica, replica of its last token)
        transfer_s: dict[int, float] = {}
        held: dict[int, tuple[int, Sequence]] = {}   # request → prefill replica and sequence holding its KV

        def prefilled(k: int, seq: Sequence, t: float) -> None:
            i = int(seq.request_id)
            r = requests[i]
            if r.output_len == 1:
                pre[k].release_kv(seq)
                arrivals.finished(t)
                return
            j = least_loaded(dec)
            d = Sequence(seq.request_id, r.prompt_len, r.output_len, seq.arrival)
            transfer_s[i] = self.links[k][j].seconds(r.prompt_len)
            dec[j].submit_handoff(d, t, transfer_s[i])
            held[i] = (k, seq)
            last[i] = d
            at[i] = (k, x + j)

        def received(seq: Sequence, t: float) -> None:
            k, held_seq = held.pop(int(seq.request_id))
            pre[k].release_kv(held_seq)

        for k, core in enumerate(pre):
            core.on_finish = lambda seq, t, k=k: prefilled(k, seq, t)
        for core in dec:
            core.on_received = received
            core.on_finish = lambda seq, t: arrivals.finished(t)

        def dispatch(i: int, t: float) -> None:
            r = requests[i]
            k = least_loaded(pre)
            seq = Sequence(str(i), r.prompt_len, 1)
            pre[k].submit(seq, t)
            first[i] = last[i] = seq
            at[i] = (k, k)

        cores: list[EngineCore] = [*pre, *dec]
        run_events(cores, arrivals, dispatch)
        records = []
        for i, r in enumerate(requests):
            p, seq = first[i], last[i]
            if seq.finish_time is None or seq.first_token_time is None:
                raise RuntimeError(f"request {i} did not finish")   # the schedulers' liveness invariant
            records.append(RequestRecord(
                request_id=seq.request_id, tag=r.tag, replica=at[i][1], prompt_len=r.prompt_len,
                output_len=r.output_len, arrival=p.arrival, first_token=seq.first_token_time,
                finish=seq.finish_time, preemptions=p.preemptions + (seq.preemptions if seq is not p else 0),
                token_times=seq.token_times, prefill_replica=at[i][0], kv_transfer_s=transfer_s.get(i, 0.0),
            ))
        return OfflineResult(records, cores)
