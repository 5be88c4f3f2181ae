"""The study's latency ratios (arXiv 2603.05692) as the simulator computes them, next to the study's.

    python -m bench.study_ratios

Static-batch mode (the study's method) on its own setups — Llama-3.1-70B FP8 on MI325X (LongAlpaca
9092/208) and Llama-3.1-405B FP4 on MI355X (MLPerf summarisation 9428/684), FP8 KV cache, the study's
memory model — prefill latency (TTFT) and mean decode step (TPOT) of each configuration over TP8's at
batch 256, and TP8's and TP4's over TP1's at batch 32. Then each cost term's share of TP4's and TP8's decode
step at batch 256: what decides how TPOT scales from TP4 to TP8.
"""

from deployments.catalog.gpus import GPUS, GpuSpec
from deployments.catalog.models import LLAMA_3_1_70B, LLAMA_3_1_405B, ModelSpec
from deployments.engines.sim.replica import ReplicaFactory
from deployments.engines.sim.static_batch import StaticBatchResult, static_batch
from schema.deployment import EngineConfig
from schema.dtypes import Dtype

SETUPS: dict[str, tuple[ModelSpec, GpuSpec, Dtype, int, int]] = {
    "70B FP8 MI325X": (LLAMA_3_1_70B, GPUS["mi325x"], Dtype.fp8, 9092, 208),
    "405B FP4 MI355X": (LLAMA_3_1_405B, GPUS["mi355x"], Dtype.fp4, 9428, 684),
}
# The study's own ratios where we have them (PAPER.md, issue 18): decode TP4 / TP8 at batch 256.
STUDY = {("70B FP8 MI325X", "decode", "tp4/tp8"): 1.67, ("405B FP4 MI355X", "decode", "tp4/tp8"): 1.61}
RATIOS = [((2, 1), (8, 1), 256), ((4, 1), (8, 1), 256), ((4, 2), (8, 1), 256), ((8, 1), (1, 1), 32),
          ((4, 1), (1, 1), 32)]


def _name(tp: int, pp: int) -> str:
    return f"tp{tp}" + (f"pp{pp}" if pp > 1 else "")


def run(setup: str, tp: int, pp: int, batch: int) -> tuple[StaticBatchResult, ReplicaFactory]:
    model, gpu, dtype, isl, osl = SETUPS[setup]
    factory = ReplicaFactory(model, gpu, dtype, Dtype.fp8, tp, pp, EngineConfig(memory_model="study"))
    return static_batch(factory.cost_model, batch, isl, osl, plan=factory.plan), factory


def main() -> None:
    print("ratio                      setup              phase      Parallax  study   fits (study memory)")
    for setup in SETUPS:
        for (a, b, batch) in RATIOS:
            ra, _ = run(setup, *a, batch)
            rb, _ = run(setup, *b, batch)
            key = f"{_name(*a)}/{_name(*b)}"
            fits = "yes" if ra.fits and rb.fits else f"no (max batch {ra.max_batch} / {rb.max_batch})"
            for phase, x, y in (("prefill", ra.prefill_ms, rb.prefill_ms),
                                ("decode", ra.decode_step_ms, rb.decode_step_ms)):
                study = STUDY.get((setup, phase, key))
                print(f"{key + f' @BS{batch}':26s} {setup:18s} {phase:9s} {x / y:8.2f}  "
                      f"{'' if study is None else f'{study:.2f}':6s}  {fits}")
    print("\ndecode step at BS256, share of each cost term (ms):")
    for setup in SETUPS:
        for tp in (4, 8):
            r, _ = run(setup, tp, 1, 256)
            terms = r.breakdown["decode"]
            print(f"  {setup:18s} tp{tp}: {r.decode_step_ms:6.1f} ms = "
                  + ", ".join(f"{k} {v:.0%} ({v * r.decode_step_ms:.1f})" for k, v in terms.items() if v >= 0.005))


if __name__ == "__main__":
    main()
