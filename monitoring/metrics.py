"""The metric contract shared by the engines, the LLMServer wrapper, the load generator,
the controller, the recording rules and the dashboards.

Engine metrics mirror vLLM's own names (`vllm:<name>` on a plain vLLM server). Metrics recorded
through Ray (`ray.serve.metrics` / `ray.util.metrics`) are exported on Ray's metrics port with a
`ray_` prefix and `:` replaced by `_`, e.g. `ray_vllm_time_to_first_token_seconds_bucket`.
Dashboards therefore take the prefix (`ray_vllm_` or `vllm:`) as a variable.
"""

# --- engine (vLLM names, without the "vllm:" / "vllm_" prefix) --------------------------------
# Labels on every engine metric: model_name (= the configuration name, which is also the served
# model name), config, tp, pp, engine ("sim" | "vllm").
ENGINE_LABELS = ("model_name", "config", "tp", "pp", "engine")
NUM_REQUESTS_RUNNING = "num_requests_running"          # gauge
NUM_REQUESTS_WAITING = "num_requests_waiting"          # gauge
KV_CACHE_USAGE = "kv_cache_usage_perc"                 # gauge, 0..1
NUM_PREEMPTIONS = "num_preemptions"                    # counter (exported with _total)
PROMPT_TOKENS = "prompt_tokens"                        # counter
GENERATION_TOKENS = "generation_tokens"                # counter
TIME_TO_FIRST_TOKEN = "time_to_first_token_seconds"    # histogram
INTER_TOKEN_LATENCY = "inter_token_latency_seconds"    # histogram
TIME_PER_OUTPUT_TOKEN = "request_time_per_output_token_seconds"  # histogram (per request mean)
E2E_REQUEST_LATENCY = "e2e_request_latency_seconds"    # histogram
REQUEST_QUEUE_TIME = "request_queue_time_seconds"      # histogram
REQUEST_PREFILL_TIME = "request_prefill_time_seconds"  # histogram
REQUEST_DECODE_TIME = "request_decode_time_seconds"    # histogram
REQUEST_SUCCESS = "request_success"                    # counter, label finished_reason
EXTERNAL_PREFIX_CACHE_HITS = "external_prefix_cache_hits"  # counter: prompt tokens a KV connector loaded

# vLLM's bucket boundaries (vllm/v1/metrics/loggers.py).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
               10.0, 20.0, 40.0, 80.0)
REQUEST_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                           60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)

# --- server side, per SLA class (the LLMServer wrapper times every request, whatever the engine) -
# Emitted through ray.serve.metrics as "parallax_<name>"; exported as "ray_parallax_<name>".
SERVER_PREFIX = "parallax_"
SERVER_LABELS = ("config", "tp", "pp", "sla_class")
SERVER_REQUESTS = "requests"                  # counter, + label status (one of SERVER_STATUSES)
SERVER_STATUSES = ("ok", "error", "aborted")
SERVER_TTFT = "ttft_seconds"                  # histogram
SERVER_TPOT = "tpot_seconds"                  # histogram (per-request mean time per output token)
SERVER_E2E = "e2e_seconds"                    # histogram
SERVER_OUTPUT_TOKENS = "output_tokens"        # counter
SERVER_SLO_MET = "slo_met"                    # counter (attainment: met / requests, see rules.py)
SERVER_SLO_VIOLATED = "slo_violated"          # counter, requests that ended ok but missed (failed ones: requests)
# The traffic itself, per class (what a controller forecasts; rules.py sums it over configurations). Means come
# from counters: Ray 2.60 rebuilds a histogram's _sum from its buckets' midpoints (open_telemetry_metric_recorder.py,
# record_histogram_aggregated_batch), so a histogram gives quantiles, never an exact mean.
SERVER_ARRIVALS = "arrivals"                  # counter, requests of the class that reached the configuration
SERVER_PROMPT_TOKENS = "prompt_tokens"        # counter, their prompt tokens
SERVER_PROMPT_LENGTH = "request_prompt_tokens"   # histogram, prompt tokens of each arriving request
SERVER_OUTPUT_LENGTH = "request_output_tokens"   # histogram, output tokens of each request that ended ok
                                                 # (their sum: SERVER_OUTPUT_TOKENS, their count: requests ok)

# SLO-oriented buckets: fine enough to read p50/p90/p99 near the MLPerf targets, and to tell decode
# speeds apart (TPOT ~10 ms on TP8 vs ~15 ms on TP4xPP2 must not share one bucket).
LATENCY_BUCKETS = (0.0025, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.0175, 0.02, 0.025, 0.03, 0.035, 0.04, 0.045,
                   0.05, 0.06, 0.07, 0.08, 0.1, 0.125, 0.15, 0.175, 0.2, 0.25,
                   0.3, 0.4, 0.45, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.5, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0,
                   60.0, 120.0, 300.0)

# Request lengths in tokens: steps of ×1.5 and ×4/3 in turn (1, 2, 3, 4, 6, 8 … 131072), so a quantile read by
# interpolation inside a bucket is within ~20% while the buckets span a one-token reply to a 128k-token context.
TOKEN_BUCKETS = tuple(float(b) for b in sorted({2 ** k for k in range(18)} | {3 * 2 ** k for k in range(16)}))

# --- client side (the load generator's own /metrics, plain prometheus_client) ----------------
CLIENT_PREFIX = "parallax_client_"
CLIENT_LABELS = ("config", "sla_class")
CLIENT_REQUESTS = "requests"                  # counter, + label status ("ok" | "error" | "timeout")
CLIENT_TTFT = "ttft_seconds"                  # histogram
CLIENT_TPOT = "tpot_seconds"                  # histogram
CLIENT_ITL = "itl_seconds"                    # histogram
CLIENT_E2E = "e2e_seconds"                    # histogram
CLIENT_OUTPUT_TOKENS = "output_tokens"        # counter
CLIENT_SLO_MET = "slo_met"                    # counter
CLIENT_SLO_VIOLATED = "slo_violated"          # counter
CLIENT_OFFERED_RATE = "offered_rate"          # gauge, requests/s the arrival process targets

# --- controller -------------------------------------------------------------------------------
CONTROLLER_PREFIX = "parallax_controller_"
ROUTING_WEIGHT = "routing_weight"             # gauge, labels sla_class, config
DECISIONS = "decisions"                       # counter, labels sla_class, config, policy
STALE = "stale"                               # gauge, 1 while Prometheus data is missing/stale
PREDICTED_HEADROOM = "predicted_headroom"     # gauge, labels sla_class, config (what-if)
REPARTITION_DECISIONS = "repartition_decisions"  # counter, label outcome (move, stay, error)
REPARTITION_MOVES = "repartition_moves"       # counter, label result (reached, rolled_back)
TRANSITION_STEP_SECONDS = "transition_step_seconds"  # histogram, label step (deploy, scale, route, drain, remove)
TRANSITION_STEP_BUCKETS = (0.1, 1, 5, 10, 30, 60, 120, 300, 600)  # seconds: a route (0.01 s) to a vLLM start (minutes)
PREDICTED_GAIN = "predicted_gain"             # gauge, the last re-plan's relative gain of moving (cost counted)
REALISED_GAIN = "realised_gain"               # gauge, the last move's measured gain over the prediction of staying
SHAPE_GPUS = "shape_gpus"                     # gauge, label shape (TP4, PP4, ...): GPUs serving in that shape now

# --- faults (a run's scheduled faults, controllers/faults/; exported in the controller's registry) ---
FAULT_PREFIX = "parallax_fault_"
FAULT_LABELS = ("fault", "action", "target")  # fault: its index in the scenario; target: a configuration, or ""
FAULT_APPLIED = "applied"                     # counter: the fault's action was taken
FAULT_ACTIVE = "active"                       # gauge: 1 from the action until its effect ended (replacement
                                              # running, speed restored, fresh data, controller stepping)
