"""The Parallax dashboards: a side-by-side comparison of configurations, and a per-configuration drill-down.

Per-class figures read the recording rules (monitoring.rules); engine figures read the engine metrics
directly, through the `engine_prefix` variable (`ray_vllm_` under Ray Serve, `vllm:` for a plain vLLM
server), interpolated into the metric name: `${engine_prefix}num_requests_running`. Engine series are
keyed by `model_name`, which the contract sets to the configuration name (and which plain vLLM has too).
"""

from monitoring import metrics as m
from monitoring import rules as r
from monitoring.dashboards.model import Annotation, Dashboard, Panel, Row, Target, Variable

COMPARISON_UID = "parallax-comparison"
DRILLDOWN_UID = "parallax-config"

ENGINE_PREFIXES = ("ray_vllm_", "vllm:")
ENGINE_PREFIX = Variable("engine_prefix", "engine metrics", "custom", ",".join(ENGINE_PREFIXES),
                         options=ENGINE_PREFIXES, default=ENGINE_PREFIXES[0])
SOURCE = Variable("source", "measured at", "custom", "server,client", options=("server", "client"), default="server")
CLASSES = Variable("sla_class", "SLA class", "query", f"label_values({r.REQUEST_RATE}, sla_class)",
                   multi=True, include_all=True, all_value=".*")
CONFIGS = Variable("config", "configuration", "query",
                   f"label_values(${{engine_prefix}}{m.NUM_REQUESTS_RUNNING}, model_name)",
                   multi=True, include_all=True, all_value=".*")
ONE_CONFIG = Variable("config", "configuration", "query", CONFIGS.query)

ANNOTATIONS = (
    Annotation("controller decisions",
               f'changes({m.CONTROLLER_PREFIX}{m.DECISIONS}_total{{sla_class=~"$sla_class"}}[$__rate_interval]) > 0',
               title="{{sla_class}} → {{config}}", text="policy {{policy}}", color="orange",
               tag_keys=("sla_class", "config", "policy")),
    Annotation("routing weight changes",
               f'changes({m.CONTROLLER_PREFIX}{m.ROUTING_WEIGHT}{{sla_class=~"$sla_class"}}[$__rate_interval]) > 0',
               title="weight {{sla_class}} → {{config}}", text="routing weight changed", color="purple",
               tag_keys=("sla_class", "config")),
    # the scenario's faults (controllers/faults/): those aimed at the configurations shown, and the run-wide ones
    Annotation("faults applied",
               f'increase({m.FAULT_PREFIX}{m.FAULT_APPLIED}_total{{target=~"$config|"}}[$__rate_interval]) > 0',
               title="fault {{fault}}: {{action}} {{target}}", text="a scheduled fault was applied", color="red",
               tag_keys=("action", "target")),
    Annotation("faults in effect", f'{m.FAULT_PREFIX}{m.FAULT_ACTIVE}{{target=~"$config|"}} > 0',
               title="fault {{fault}}: {{action}} {{target}}", text="until its effect is over (replacement running, "
               "speed restored, fresh data, controller stepping)", color="dark-red", tag_keys=("action", "target")),
)

CLASS_SEL = 'config=~"$config", sla_class=~"$sla_class"'
TRAFFIC_SEL = 'source="server", sla_class=~"$sla_class"'
ENGINE_SEL = 'model_name=~"$config"'
PCT = {"0.5": "p50", "0.9": "p90", "0.99": "p99"}


def _eng(name: str) -> str:
    return "${engine_prefix}" + name


def _engine_quantile(q: str, name: str, by: str = "model_name, ") -> str:
    return (f"histogram_quantile({q}, sum by ({by}le) "
            f"(rate({_eng(name)}_bucket{{{ENGINE_SEL}}}[$__rate_interval])))")


# --- comparison -------------------------------------------------------------------------------------

def _latency_row(title: str, record: str, what: str) -> Row:
    return Row(title, tuple(
        Panel(f"{title} {label}", f"{label} {what} per configuration and class, measured at the $source "
              "(recording rules)",
              (Target(f'{record}{{source="$source", {CLASS_SEL}, quantile="{q}"}}', "{{config}} · {{sla_class}}"),),
              unit="s")
        for q, label in PCT.items()))


def _length_panel(title: str, what: str, mean: str, quantiles: str) -> Panel:
    return Panel(title, f"{what}: mean and p90 over the window (recording rules, server side)",
                 (Target(f"{mean}{{{TRAFFIC_SEL}}}", "{{sla_class}} mean"),
                  Target(f'{quantiles}{{{TRAFFIC_SEL}, quantile="0.9"}}', "{{sla_class}} p90")), unit="short")


def comparison() -> Dashboard:
    """One row per metric, one series per configuration (and class)."""
    cls = f'source="$source", {CLASS_SEL}'
    rows = (
        _latency_row("TTFT", r.TTFT, "time to first token"),
        _latency_row("TPOT", r.TPOT, "mean time per output token of a request"),
        _latency_row("E2E", r.E2E, "end-to-end request latency"),
        Row("Throughput", (
            Panel("Requests/s", "Finished requests per second, every status, and the rate the load generator offers",
                  (Target(f"{r.REQUEST_RATE}{{{cls}}}", "{{config}} · {{sla_class}}"),
                   Target(f'sum by (sla_class) ({m.CLIENT_PREFIX}{m.CLIENT_OFFERED_RATE}{{sla_class=~"$sla_class"}})',
                          "offered · {{sla_class}}")),
                  unit="reqps"),
            Panel("Output tokens/s", "Generated tokens per second",
                  (Target(f"{r.OUTPUT_TOKENS_RATE}{{{cls}}}", "{{config}} · {{sla_class}}"),), unit="short"),
            Panel("Output tokens/s per GPU", "Generated tokens per second divided by the configuration's GPUs "
                  "(tp × pp × replicas)",
                  (Target(f"{r.OUTPUT_TOKENS_PER_GPU}{{{cls}}}", "{{config}} · {{sla_class}}"),), unit="short"),
        )),
        Row("SLO", (
            Panel("Goodput", "Requests per second that met their class's SLO",
                  (Target(f"{r.GOODPUT}{{{cls}}}", "{{config}} · {{sla_class}}"),), unit="reqps"),
            Panel("SLO attainment", "Share of the requests that ended that met their class's SLO (a failed request "
                  "is a miss); the number the controller acts on",
                  (Target(f"{r.SLO_ATTAINMENT}{{{cls}}}", "{{config}} · {{sla_class}}"),),
                  unit="percentunit", max=1),
            Panel("Error ratio", "Share of requests that ended in error, abort or timeout",
                  (Target(f"{r.ERROR_RATIO}{{{cls}}}", "{{config}} · {{sla_class}}"),), unit="percentunit", max=1),
        )),
        Row("Traffic per class (every configuration together): what the controller forecasts", (
            Panel("Arrival rate", "Requests per second of each class reaching the configurations (counted as they "
                  "arrive), and the rate the load generator offers",
                  (Target(f'{r.CLASS_ARRIVAL_RATE}{{{TRAFFIC_SEL}}}', "{{sla_class}}"),
                   Target(f'sum by (sla_class) ({m.CLIENT_PREFIX}{m.CLIENT_OFFERED_RATE}{{sla_class=~"$sla_class"}})',
                          "offered · {{sla_class}}")), unit="reqps"),
            _length_panel("Prompt tokens", "Prompt length of each class's arriving requests",
                          r.CLASS_PROMPT_TOKENS_MEAN, r.CLASS_PROMPT_TOKENS),
            _length_panel("Output tokens", "Output length of each class's requests that ended ok",
                          r.CLASS_OUTPUT_TOKENS_MEAN, r.CLASS_OUTPUT_TOKENS),
        )),
        Row("Engine: queue, batch, KV cache", (
            Panel("Queue depth (waiting)", "Requests waiting to be scheduled, summed over replicas",
                  (Target(f"sum by (model_name) ({_eng(m.NUM_REQUESTS_WAITING)}{{{ENGINE_SEL}}})", "{{model_name}}"),)),
            Panel("Running", "Requests in the running batch, summed over replicas",
                  (Target(f"sum by (model_name) ({_eng(m.NUM_REQUESTS_RUNNING)}{{{ENGINE_SEL}}})", "{{model_name}}"),)),
            Panel("KV-cache usage", "Fraction of KV-cache blocks in use (the fullest replica)",
                  (Target(f"max by (model_name) ({_eng(m.KV_CACHE_USAGE)}{{{ENGINE_SEL}}})", "{{model_name}}"),),
                  unit="percentunit", max=1),
            Panel("Preemptions/s", "Requests preempted (KV cache full) per second",
                  (Target(f"sum by (model_name) (rate({_eng(m.NUM_PREEMPTIONS)}_total{{{ENGINE_SEL}}}"
                          "[$__rate_interval]))", "{{model_name}}"),)),
            Panel("Engine TTFT p90", "Time to first token as the engine measures it",
                  (Target(_engine_quantile("0.9", m.TIME_TO_FIRST_TOKEN), "{{model_name}}"),), unit="s"),
            Panel("Engine queue time p90", "Time requests wait in the engine's queue before being scheduled",
                  (Target(_engine_quantile("0.9", m.REQUEST_QUEUE_TIME), "{{model_name}}"),), unit="s"),
        )),
        Row("Controller", (
            Panel("Routing weights", "Share of each class the controller sends to each configuration",
                  (Target(f'{m.CONTROLLER_PREFIX}{m.ROUTING_WEIGHT}{{{CLASS_SEL}}}', "{{sla_class}} → {{config}}"),),
                  unit="percentunit", max=1),
            Panel("Decisions", "Routing decisions in the last minute, by policy",
                  (Target(f'sum by (sla_class, config, policy) (increase({m.CONTROLLER_PREFIX}{m.DECISIONS}_total'
                          f'{{{CLASS_SEL}}}[1m]))', "{{sla_class}} → {{config}} ({{policy}})"),)),
            Panel("Predicted headroom", "What-if: how much more load each configuration could take for a class; "
                  "stale = 1 while the controller lacks fresh Prometheus data",
                  (Target(f'{m.CONTROLLER_PREFIX}{m.PREDICTED_HEADROOM}{{{CLASS_SEL}}}', "{{sla_class}} @ {{config}}"),
                   Target(f"{m.CONTROLLER_PREFIX}{m.STALE}", "stale")), unit="percentunit"),
        )),
        Row("Re-partitioning (controller.policy: repartition)", (
            Panel("GPUs by shape", "GPUs serving in each shape (TP×PP) now: a move shows as GPUs changing shape",
                  (Target(f"{m.CONTROLLER_PREFIX}{m.SHAPE_GPUS}", "{{shape}}"),)),
            Panel("Gain of moving", "The last re-plan's predicted relative gain of moving to its best split, the "
                  "transition's cost counted, and the last move's realised gain over the prediction of staying",
                  (Target(f"{m.CONTROLLER_PREFIX}{m.PREDICTED_GAIN}", "predicted"),
                   Target(f"{m.CONTROLLER_PREFIX}{m.REALISED_GAIN}", "realised")), unit="percentunit"),
            Panel("Re-plans and moves", "Re-plans in the last minute by outcome (move, stay, error), and moves "
                  "by result (reached, rolled back)",
                  (Target(f"sum by (outcome) (increase({m.CONTROLLER_PREFIX}{m.REPARTITION_DECISIONS}_total[1m]))",
                          "{{outcome}}"),
                   Target(f"sum by (result) (increase({m.CONTROLLER_PREFIX}{m.REPARTITION_MOVES}_total[1m]))",
                          "move {{result}}"))),
            Panel("Transition step time p90", "Seconds a transition step took, by step (deploy, scale, route, "
                  "drain, remove)",
                  (Target(f"histogram_quantile(0.9, sum by (step, le) (rate({m.CONTROLLER_PREFIX}"
                          f"{m.TRANSITION_STEP_SECONDS}_bucket[$__rate_interval])))", "{{step}}"),), unit="s"),
        )),
    )
    return Dashboard(COMPARISON_UID, "Parallax · configuration comparison",
                     "TP / PP / hybrid / replicated configurations side by side, per SLA class", rows,
                     variables=(ENGINE_PREFIX, SOURCE, CONFIGS, CLASSES), annotations=ANNOTATIONS)


# --- drill-down -------------------------------------------------------------------------------------

def _both_sides(title: str, record: str) -> Panel:
    return Panel(f"{title}: server vs client", f"{title} p50 and p99 per class, as the server and the load "
                 "generator measure it (their gap is transport and streaming overhead)",
                 tuple(Target(f'{record}{{{CLASS_SEL}, quantile="{q}"}}', f"{{{{sla_class}}}} {{{{source}}}} {PCT[q]}")
                       for q in ("0.5", "0.99")), unit="s")


def drilldown() -> Dashboard:
    """Everything about one configuration: per-class latency on both sides, scheduler, latency breakdown."""
    by_class = f'source="server", {CLASS_SEL}'
    rows = (
        Row("Per-class latency", (_both_sides("TTFT", r.TTFT), _both_sides("TPOT", r.TPOT), _both_sides("E2E", r.E2E))),
        Row("Traffic and SLO", (
            Panel("GPUs", "tp × pp × replicas of this configuration (from the scenario's recording rules)",
                  (Target(f'{r.CONFIG_GPUS}{{config=~"$config"}}', "{{tp}}×{{pp}} ×{{replicas}}"),),
                  kind="stat", width=4),
            Panel("Requests/s and goodput", "Finished requests per second and those meeting the SLO (server side)",
                  (Target(f"{r.REQUEST_RATE}{{{by_class}}}", "{{sla_class}} requests"),
                   Target(f"{r.GOODPUT}{{{by_class}}}", "{{sla_class}} goodput")), unit="reqps", width=7),
            Panel("SLO attainment", "Share of the requests that ended meeting the SLO (failed ones are misses), "
                  "both sides",
                  (Target(f"{r.SLO_ATTAINMENT}{{{CLASS_SEL}}}", "{{sla_class}} {{source}}"),),
                  unit="percentunit", max=1, width=6),
            Panel("Output tokens/s per GPU", "Generated tokens per second per GPU (server side)",
                  (Target(f"{r.OUTPUT_TOKENS_PER_GPU}{{{by_class}}}", "{{sla_class}}"),), width=7),
        )),
        Row("Engine scheduler", (
            Panel("Running and waiting", "Requests in the batch and in the queue",
                  (Target(f"sum ({_eng(m.NUM_REQUESTS_RUNNING)}{{{ENGINE_SEL}}})", "running"),
                   Target(f"sum ({_eng(m.NUM_REQUESTS_WAITING)}{{{ENGINE_SEL}}})", "waiting"))),
            Panel("KV-cache usage per replica", "Fraction of KV-cache blocks in use, per Serve replica",
                  (Target(f"max by (replica) ({_eng(m.KV_CACHE_USAGE)}{{{ENGINE_SEL}}})", "replica {{replica}}"),),
                  unit="percentunit", max=1),
            Panel("Tokens/s", "Prompt tokens prefilled and tokens generated per second; preemptions per second",
                  (Target(f"sum (rate({_eng(m.PROMPT_TOKENS)}_total{{{ENGINE_SEL}}}[$__rate_interval]))", "prompt"),
                   Target(f"sum (rate({_eng(m.GENERATION_TOKENS)}_total{{{ENGINE_SEL}}}[$__rate_interval]))",
                          "generation"),
                   Target(f"sum (rate({_eng(m.NUM_PREEMPTIONS)}_total{{{ENGINE_SEL}}}[$__rate_interval]))",
                          "preemptions"))),
        )),
        Row("Engine latency breakdown", (
            Panel("Queue / prefill / decode p90", "Where a request's time goes inside the engine",
                  tuple(Target(_engine_quantile("0.9", name, ""), label) for name, label in (
                      (m.REQUEST_QUEUE_TIME, "queue"), (m.REQUEST_PREFILL_TIME, "prefill"),
                      (m.REQUEST_DECODE_TIME, "decode"))), unit="s"),
            Panel("Inter-token latency", "Gap between consecutive tokens of a stream",
                  tuple(Target(_engine_quantile(q, m.INTER_TOKEN_LATENCY, ""), PCT[q]) for q in ("0.5", "0.99")),
                  unit="s"),
            Panel("Finished requests/s", "Requests the engine finished, by reason (stop, length, abort)",
                  (Target(f"sum by (finished_reason) (rate({_eng(m.REQUEST_SUCCESS)}_total{{{ENGINE_SEL}}}"
                          "[$__rate_interval]))", "{{finished_reason}}"),), unit="reqps"),
        )),
    )
    return Dashboard(DRILLDOWN_UID, "Parallax · one configuration",
                     "One configuration in depth: both measurement sides, scheduler state, latency breakdown",
                     rows, variables=(ENGINE_PREFIX, ONE_CONFIG, CLASSES), annotations=ANNOTATIONS)


def all_dashboards() -> tuple[Dashboard, ...]:
    return comparison(), drilldown()
