#!/usr/bin/env bash
# GPU smoke test of the vLLM engine: on a machine with GPUs and vLLM installed (`pip install -e '.[vllm]'`),
# or against the cluster in RAY_ADDRESS, the README's GPU scenario shrunk to what the GPUs hold and one
# short load step. It prints, per replica, the GPUs each rank of vLLM's Ray executor holds as vLLM itself
# reports them (RayWorkerProc.get_node_and_physical_gpu_ids) and the processes nvidia-smi sees on each GPU,
# then checks that no GPU is taken twice. It cannot run on a machine without GPUs (vLLM's Ray executor
# refuses the CPU platform); see deployments/engines/vllm/GPU.md.
#
#   bench/gpu_smoke.sh [SCENARIO]                       # default scenarios/llama70b-h100-vllm.yaml
#   MODEL=llama-3.1-8b MODEL_PATH=meta-llama/Llama-3.1-8B-Instruct SPLITS="tp1x4 tp2x2" bench/gpu_smoke.sh
#
# SPLITS: configurations as tpT[ppP][xR] or ppP[xR] (default: the scenario's, as many as the GPUs hold);
# RATE (req/s, default 1), DURATION (s, default 20). HF_TOKEN for gated models.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-.venv/bin/python}
SCENARIO=${1:-scenarios/llama70b-h100-vllm.yaml}
WORK=$(mktemp -d /tmp/parallax-gpu-smoke.XXXXXX)
export PARALLAX_STATE_DIR="$WORK/state"
trap '$PY -m controllers.cli.app down gpu-smoke >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

# 1. The scenario, shrunk: the configurations the GPUs hold, one load step.
$PY - "$SCENARIO" "$WORK/gpu-smoke.yaml" <<'EOF'
import os, re, shutil, subprocess, sys
from pathlib import Path
import yaml

src, out = Path(sys.argv[1]), Path(sys.argv[2])
s = yaml.safe_load(src.read_text())
if os.environ.get("RAY_ADDRESS"):
    import ray
    ray.init(log_to_driver=False)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    ray.shutdown()
elif shutil.which("nvidia-smi"):
    gpus = len(subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True).stdout.splitlines())
else:
    sys.exit("no GPU here (no nvidia-smi) and no RAY_ADDRESS: this smoke test needs GPUs")
configs = []
for name in os.environ.get("SPLITS", "").split():
    m = re.fullmatch(r"(?:tp(\d+))?(?:pp(\d+))?(?:x(\d+))?", name)
    if not m or not (m.group(1) or m.group(2)):
        sys.exit(f"SPLITS: {name!r} is not tpT[ppP][xR] or ppP[xR]")
    configs.append({"name": name, "tp": int(m.group(1) or 1), "pp": int(m.group(2) or 1),
                    "replicas": int(m.group(3) or 1)})
kept, used = [], 0
for c in configs or s["configurations"]:
    need = c.get("tp", 1) * c.get("pp", 1) * c.get("replicas", 1)
    if used + need <= gpus:
        kept.append(c)
        used += need
if not kept:
    sys.exit(f"none of the configurations fits the {gpus} GPUs here; set SPLITS")
per_node = s["hardware"].get("gpus_per_node", 8)
s["hardware"]["nodes"] = max(1, -(-used // per_node))
s["name"], s["configurations"] = "gpu-smoke", kept
s["model"] = os.environ.get("MODEL", s["model"])
s["engine"]["model_path"] = os.environ.get("MODEL_PATH", s["engine"]["model_path"])
s["load"].update(rates=[float(os.environ.get("RATE", 1))], duration_s=float(os.environ.get("DURATION", 20)),
                 warmup_s=0)
out.write_text(yaml.safe_dump(s, sort_keys=False))
print(f"{gpus} GPUs: {', '.join(c['name'] for c in kept)} ({used} GPUs), model {s['engine']['model_path']}")
EOF

# 2. Deploy (progress per configuration while vLLM starts), then what each rank holds.
$PY -m controllers.cli.app validate "$WORK/gpu-smoke.yaml" >/dev/null
$PY -m controllers.cli.app up "$WORK/gpu-smoke.yaml"
$PY - "$PARALLAX_STATE_DIR/gpu-smoke.json" <<'EOF'
import json, os, shutil, subprocess, sys
from collections import Counter
import ray

state = json.load(open(sys.argv[1]))
if state["mode"] == "local":
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"   # a local Ray on loopback (README, Security)
ray.init(address=state["ray_address"], log_to_driver=False)
taken: Counter = Counter()
workers = sorted((a["name"], a["namespace"]) for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["name"].startswith("vllm_Worker_"))
print(f"{len(workers)} vLLM ranks (RayExecutorV2 names them vllm_Worker_<engine>[_TP<t>][_PP<p>]):")
for name, ns in workers:
    node, gpus = ray.get(ray.get_actor(name, namespace=ns).get_node_and_physical_gpu_ids.remote())
    print(f"  {name}: node {node[:8]}, GPUs {gpus}")
    taken.update((node, g) for g in gpus)
if shutil.which("nvidia-smi"):
    print(subprocess.run(["nvidia-smi", "--query-compute-apps=pid,gpu_bus_id,used_memory", "--format=csv"],
                         capture_output=True, text=True).stdout)
twice = [k for k, n in taken.items() if n > 1]
if twice or not taken:
    sys.exit(f"FAIL: GPUs taken twice: {twice}" if twice else "FAIL: no vLLM rank found")
print(f"ok: {len(taken)} GPUs, each held by one rank")
EOF

# 3. One short load step through the ingress, then down (the trap).
TARGET=$($PY -c "import json,sys; s=json.load(open(sys.argv[1])); print(','.join(s['ingress_urls']) or s['url'])" \
  "$PARALLAX_STATE_DIR/gpu-smoke.json")
$PY -m controllers.cli.app load --target "$TARGET" --scenario "$WORK/gpu-smoke.yaml" --out "$WORK/load" --no-progress
