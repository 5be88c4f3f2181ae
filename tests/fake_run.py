"""A small but complete run folder for report tests (no services needed)."""

import json
import random
from pathlib import Path

import yaml

from controllers import runfolder as rf
from controllers.policies import Decision
from deployments.resolve import load_scenario
from loadgen.records import RequestRecord, write_records

ROOT = Path(__file__).resolve().parents[1]


def make_run(folder: Path, seed: int = 0) -> Path:
    """A small but complete run folder: chat is fast on tp8, summarize keeps its SLO only on pp8."""
    folder.mkdir(parents=True)
    s = load_scenario(ROOT / "scenarios/demo.yaml").scenario
    (folder / rf.SCENARIO_YAML).write_text(yaml.safe_dump(s.model_dump(mode="json")))
    rnd = random.Random(seed)
    rows = []
    t = 1000.0
    for rate in (1.0, 2.0):
        step = int(rate) - 1
        for i in range(60):
            cls = "chat" if i % 2 else "summarize"
            cfg = ["tp8", "tp4pp2", "pp8"][i % 3]
            fast = (cls == "chat") == (cfg == "tp8") or cfg == "tp4pp2"
            ttft = rnd.uniform(0.05, 0.3) if fast else rnd.uniform(0.5, 3.0)
            rows.append(RequestRecord(
                request_id=f"{step}-{i}", config=cfg, model="auto", sla_class=cls, status="ok" if i != 7 else "error",
                slo_met=fast and i != 7, ttft_s=ttft, tpot_s=rnd.uniform(0.01, 0.05), e2e_s=ttft + 3,
                output_tokens=100, max_tokens=100, prompt_tokens=200, planned_prompt_tokens=200,
                scheduled_time=t + i * 0.5, send_time=t + i * 0.5, rate_step=step, offered_rate=rate / 2,
                server_ttft_s=ttft / s.engine.time_scale * 0.8))
        rows.append(RequestRecord(request_id=f"{step}-c", config="tp8", model="auto", sla_class="chat",
                                  status="cancelled", send_time=None, scheduled_time=t + 31, rate_step=step,
                                  offered_rate=rate / 2, planned_prompt_tokens=200, max_tokens=100))
        t += 30
    write_records(folder / rf.RECORDS_JSONL, rows)
    for k in range(10):
        w = {"tp8": 0.9, "tp4pp2": 0.05, "pp8": 0.05} if k > 3 else {"tp8": 1 / 3, "tp4pp2": 1 / 3, "pp8": 1 / 3}
        flipped = {"tp8": w["pp8"], "tp4pp2": w["tp4pp2"], "pp8": w["tp8"]}
        rf.append_weights(folder, 1000.0 + 6 * k, {"chat": w, "summarize": flipped}, stale=k == 2)
    rf.append_decision(folder, Decision(1024.0, "chat", "best-per-class", {"tp8": 0.9, "tp4pp2": 0.05, "pp8": 0.05},
                                        {}, "tp8", "first choice: tp8 (attainment 100%)"))
    (folder / rf.WHATIF_JSON).write_text(json.dumps({
        "note": "test prediction", "rate_step": 1,
        "predictions": [{"sla_class": "chat", "config": "tp8", "requests": 20, "attainment": 1.0, "headroom": 0.5,
                         "meets": True, "measured_attainment": 0.95, "interval": [0.76, 0.99], "agrees": True,
                         "flipped": 1, "ttft_error": 0.02, "tpot_error": -0.01, "capacity": 10.0,
                         "alone": {"ttft_p90": 0.05}},
                        {"sla_class": "chat", "config": "pp8", "requests": 20, "attainment": 1.0, "headroom": 0.2,
                         "meets": True, "measured_attainment": 0.0, "interval": [0.0, 0.16], "agrees": False,
                         "flipped": 20, "ttft_error": -0.8, "tpot_error": 0.1, "capacity": 2.0,
                         "alone": {"ttft_p90": 0.2}}],
        "cost_terms": {"prefill": {"tp8": {"gemm": 0.01, "allreduce": 0.004}, "pp8": {"gemm": 0.08, "p2p": 0.001}},
                       "decode": {"tp8": {"gemm": 0.002, "allreduce": 0.001}, "pp8": {"gemm": 0.016}}}}))
    return folder
