"""The report's Faults section on a synthetic run folder whose answers are known: windows, goodput and
attainment before / during / after, detect, drain, recover, the failed requests and the goodput lost."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from controllers import runfolder as rf
from controllers.faults.blast_radius import FaultImpact, failed_at, impacts, timeline, windows
from controllers.faults.record import FaultRecord, append_fault, read_faults
from controllers.report import read_run, render_report
from loadgen.records import RequestRecord, write_records
from loadgen.summary import rescore
from schema.faults import Fault
from schema.scenario import Scenario

T0 = 1000.0
SCENARIO: dict[str, Any] = {
    "name": "blast", "model": "llama-3.1-8b", "hardware": {"gpu": "h100-sxm", "gpus_per_node": 4},
    "configurations": [{"name": "big", "tp": 2}, {"name": "small", "tp": 1, "replicas": 2}],
    "classes": [{"name": "chat", "share": 1.0, "slo": {"ttft_ms": 500},
                 "input": {"kind": "fixed", "value": 100}, "output": {"kind": "fixed", "value": 10}}],
    "load": {"duration_s": 60, "timeout_s": 5},
    "controller": {"window_s": 10},
    "faults": [{"at_s": 30, "action": "kill_replica", "target": "big"},
               {"at_s": 50, "action": "slow_gpu", "target": "small", "factor": 0.5, "duration_s": 5},
               {"at_s": 55, "action": "restart_prometheus"}],
}


def req(rid: str, config: str, sent: float, met: bool = True, status: str = "ok", replica: str = "old",
        http: int | None = None, end: float | None = None) -> RequestRecord:
    ok = status == "ok"
    return RequestRecord(request_id=rid, sla_class="chat", config=config, model="auto", rate_step=0, offered_rate=4.0,
                         scheduled_time=sent, send_time=sent, end_time=end if end is not None else sent + 1.0,
                         ttft_s=(0.1 if met else 2.0) if ok else None, tpot_s=(0.01 if met else 0.05) if ok else None,
                         e2e_s=1.0 if ok else None, output_tokens=10 if ok else 0, planned_prompt_tokens=100,
                         max_tokens=10, status=status, http_status=http, replica=replica if ok else None,
                         error=None if ok else f"HTTP {http}" if http else "connection dropped")


def run_folder(tmp: Path) -> Path:
    """big (one replica) is killed at 1030: a stream cut then, two refusals, drained at 1031, replaced at 1036,
    routed again at 1037 (the replacement serves from then). small is slowed 1050-1055: its requests then miss."""
    folder = tmp / "run"
    folder.mkdir(parents=True)
    (folder / rf.SCENARIO_YAML).write_text(yaml.safe_dump(SCENARIO))
    records = []
    for i in range(120):                          # every 0.5 s from 1000 to 1059.5, on each configuration
        t = T0 + i / 2
        drained = 1031 <= t < 1037
        if t < 1030 or t >= 1037:
            records.append(req(f"b{i}", "big", t, replica="new" if t >= 1037 else "old"))
        elif not drained:
            records.append(req(f"b{i}", "big", t, status="error", http=503, end=t + 0.02))
        else:
            records.append(req(f"b{i}", "small", t))   # the drained share goes to small
        records.append(req(f"s{i}", "small", t, met=not 1050 <= t < 1055))
    records.append(req("cut", "big", 1029.75, status="error", end=1030.05))   # a stream the kill cut
    # a request whose load generator worker died: no end time, no configuration (it fails no earlier than the kill)
    records.append(req("orphan", "unknown", 1029.9, status="cancelled").model_copy(update={"end_time": None}))
    records.append(req("w", "big", 999.0, met=False) .model_copy(update={"warmup": True}))
    write_records(folder / rf.RECORDS_JSONL, records)
    for t in range(1000, 1060):
        big = 0.0 if 1031 <= t < 1037 else 0.5
        rf.append_weights(folder, float(t), {"chat": {"big": big, "small": 1 - big}}, stale=False)
    faults = [Fault.model_validate(f) for f in SCENARIO["faults"]]
    append_fault(folder, FaultRecord(index=1, fault=faults[1], due_at=1050, applied_at=1050.0, ok=True,
                                     detail="rank 0 at 0.5× speed", replica="s1", phases={"restored": 5.0},
                                     ended_at=1055.0))
    append_fault(folder, FaultRecord(index=0, fault=faults[0], due_at=1030, applied_at=1030.0, ok=True,
                                     detail="killed replica old of big", replica="old", replacement="new",
                                     phases={"noticed": 1.5, "replaced": 6.0}, ended_at=1036.0))
    append_fault(folder, FaultRecord(index=2, fault=faults[2], due_at=1055, ok=False,
                                     detail="this run has no Prometheus of its own to restart"))
    return folder


@pytest.fixture
def found(tmp_path: Path) -> list[FaultImpact]:
    folder = run_folder(tmp_path)
    run = read_run(folder)
    s = Scenario.model_validate(SCENARIO)
    from_file = [r for r in _records(folder) if not r.warmup]
    return impacts(run.faults, rescore(from_file, {"chat": s.classes[0].slo}), s, run.weights)


def _records(folder: Path) -> list[RequestRecord]:
    from loadgen.records import read_records
    return read_records(folder / rf.RECORDS_JSONL)


def test_fault_records_read_back_in_the_scenarios_order(tmp_path: Path) -> None:
    assert [r.index for r in read_faults(run_folder(tmp_path))] == [0, 1, 2]


def test_a_fault_not_applied_has_no_impact(found: list[FaultImpact]) -> None:
    assert [i.record.index for i in found] == [0, 1]


def test_windows_are_cut_by_the_load_and_by_other_faults(found: list[FaultImpact]) -> None:
    kill, slow = found
    assert {n: (w.start, w.end) for n, w in kill.windows.items()} == {
        "before": (1020.0, 1030.0), "during": (1030.0, 1036.0), "after": (1036.0, 1046.0)}
    # slow: before starts where the window reaches (1040, after the kill's effect ended); after ends with the load
    assert {n: (w.start, w.end) for n, w in slow.windows.items()} == {
        "before": (1040.0, 1050.0), "during": (1050.0, 1055.0), "after": (1055.0, 1059.5)}
    overlapping = FaultRecord(index=5, fault=Fault(at_s=0, action="restart_prometheus"), due_at=0,
                              applied_at=1033.0, ok=True, ended_at=1034.0)
    following = overlapping.model_copy(update={"applied_at": 1040.0, "ended_at": 1041.0})
    assert windows(kill.record, [overlapping], (1000.0, 1059.5), 10.0)["after"].end == 1046.0
    assert windows(kill.record, [following], (1000.0, 1059.5), 10.0)["after"].end == 1040.0


def test_goodput_and_attainment_before_during_after(found: list[FaultImpact]) -> None:
    kill, slow = found
    big = {n: kill.figures[("big", "chat", n)] for n in ("before", "during", "after")}
    assert (big["before"].requests, big["before"].met, big["before"].goodput) == (21, 20, 2.0)
    assert big["before"].attainment == pytest.approx(20 / 21)
    assert (big["during"].requests, big["during"].goodput, big["during"].attainment) == (2, 0.0, 0.0)
    assert (big["after"].requests, big["after"].goodput) == (18, 1.8)
    assert kill.config_goodput("small", "during") == pytest.approx(22 / 6)   # small carried big's drained share
    assert kill.lost == pytest.approx({"big": 12.0, "small": (2.0 - 22 / 6) * 6})
    s = {n: slow.figures[("small", "chat", n)] for n in ("before", "during", "after")}
    assert (s["before"].goodput, s["during"].goodput, s["during"].attainment) == (2.0, 0.0, 0.0)
    assert s["after"].goodput == pytest.approx(9 / 4.5)
    assert slow.lost["small"] == pytest.approx(10.0) and slow.lost["big"] == pytest.approx(0.0)
    # what the slowed GPU did to its requests' decode, and what it did not do to the other configuration's
    assert [slow.tpot_p90[("small", n)] for n in ("before", "during", "after")] == pytest.approx([0.01, 0.05, 0.01])
    assert s["during"].tpot_p90 == pytest.approx(0.05) and slow.tpot_p90[("big", "during")] == pytest.approx(0.01)
    assert kill.tpot_p90[("big", "during")] is None          # no request of big ended ok while it was down


def test_detect_drain_recover_and_the_failed_requests(found: list[FaultImpact]) -> None:
    kill, slow = found
    assert kill.detect_s == pytest.approx(0.02)   # the first refusal, before Serve noticed (1.5 s)
    assert kill.drain_s == 1.0             # the routing left big at 1031
    assert kill.recover_s == 7.0           # replaced at 1036, routed again and served by the replacement at 1037
    # the load generator's own cancelled request is not the replica's failure
    assert [(f.request_id, f.http_status, f.failed_at) for f in kill.failed] == [
        ("b60", 503, 1030.02), ("cut", None, 1030.05), ("b61", 503, 1030.52)]
    assert kill.failed[0].error == "HTTP 503"
    assert (slow.detect_s, slow.drain_s, slow.recover_s, slow.failed) == (None, None, 5.0, [])


def test_a_record_without_an_end_failed_within_its_deadline_no_earlier_than_the_fault() -> None:
    old = req("x", "big", 1029.9, status="error").model_copy(update={"end_time": None})
    assert failed_at(old, 1030.0, 5.0) == 1030.0          # in flight when the fault came: it broke then
    assert failed_at(old, 1050.0, 5.0) == 1034.9          # could not be in flight at 1050: over by its deadline
    late = req("y", "big", 1000.0, status="timeout").model_copy(update={"end_time": None})
    assert failed_at(late, 1002.0, 5.0) == 1005.0
    assert failed_at(req("z", "big", 1000.0, status="error", end=1000.5), 1030.0, 5.0) == 1000.5


def test_goodput_timeline_bins_every_configuration(found: list[FaultImpact], tmp_path: Path) -> None:
    s = Scenario.model_validate(SCENARIO)
    records = rescore([r for r in _records(run_folder(tmp_path / "again")) if not r.warmup],
                      {"chat": s.classes[0].slo})
    times, goodput = timeline(records, ["big", "small"], 1.0, 10.0)
    assert times[:3] == [0.0, 10.0, 20.0]
    assert goodput["big"][:3] == [2.0, 2.0, 2.0] and goodput["big"][3] == 0.6   # 1030-1040: 6 from 1037 on
    assert goodput["small"][5] == pytest.approx(10 / 10)   # 1050-1060: half of small's requests missed


def test_the_report_shows_the_faults_section(tmp_path: Path) -> None:
    folder = run_folder(tmp_path)
    page = render_report(folder).read_text()
    assert "<h2>Faults</h2>" in page and "Blast radius" in page
    assert "kill_replica big[0]" in page and "not applied: this run has no Prometheus" in page
    assert "noticed 1.5 s, replaced 6.0 s" in page
    # capacity hit, detect, drain, recover, failed, lost
    assert "<td>100% for 6 s</td><td>0.0</td><td>1.0</td><td>7.0</td><td>3</td><td>12</td>" in page
    assert "<td>50% for 5 s (slowed)</td>" in page
    assert "2.00 → 0.00 → 1.80" in page and "p90 TPOT 10 → 50 → 10 ms" in page
    assert "b60" in page and "HTTP 503" in page
    assert (folder / "faults.png").stat().st_size > 10_000
