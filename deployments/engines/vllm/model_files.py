"""The model's files on every node of a replica, checked or downloaded before its engine starts.

`engine.model_path` is a local folder or a Hugging Face repository id (`org/name`). vLLM's workers read the
model on the node each runs on, so before the engine starts the replica runs `fetch_model` on every node of
its placement group (a Ray task pinned to each, `on_every_node`): a folder must be there, with its
config.json (a shared file system, or the same path in each node's image); a repository is downloaded into
that node's Hugging Face cache (HF_TOKEN from the environment for gated models). A missing folder, a
gated repository without a token, or no network then fails the replica at once, naming the node, before
any worker takes a GPU. Ray Serve LLM does the same per node (`initialize_node`,
ray/llm/_internal/serve/utils/node_initialization_utils.py) for models mirrored in cloud storage; for a Hub
id it leaves the download to each vLLM worker.
"""

import re
import socket
from pathlib import Path

# A Hugging Face repository id: `org/name`, no leading dot or slash.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# What the engine needs from a repository: configs, tokenizer, safetensors weights (vLLM prefers them; a
# repository with .bin weights only gets those fetched by vLLM's workers as they load).
HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.tiktoken", "tokenizer*"]


class ModelFilesError(RuntimeError):
    """The model is not available on a node; the message names the node and the fix."""


def is_hub_id(model_path: str) -> bool:
    """A repository id rather than a folder: `org/name` that is not a folder here."""
    return bool(HUB_ID.match(model_path)) and not Path(model_path).exists()


def model_path_problem(model_path: str) -> str | None:
    """Why `model_path` cannot serve on this machine (None: a model folder, or a repository id)."""
    if is_hub_id(model_path):
        return None
    folder = Path(model_path).expanduser()
    if not folder.is_dir():
        return (f"{model_path}: no such folder on {socket.gethostname()}; give a folder that holds the model "
                "(its config.json) on every node, or a Hugging Face repository id (org/name)")
    if not (folder / "config.json").is_file():
        return f"{model_path}: the folder has no config.json; point model_path at the model's own folder"
    return None


def fetch_model(model_path: str) -> str:
    """On this node: check the folder, or download the repository into the Hugging Face cache; return where
    the model is here. ModelFilesError naming the node when it cannot."""
    problem = model_path_problem(model_path)
    if problem is not None:
        raise ModelFilesError(problem)
    if not is_hub_id(model_path):
        return str(Path(model_path).expanduser())
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return str(snapshot_download(repo_id=model_path, allow_patterns=HUB_FILES))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFilesError(f"{model_path}: cannot download it on {socket.gethostname()}: {first}; set HF_TOKEN "
                              "for a gated model, or give a folder present on every node") from None


def on_every_node(model_path: str, nodes: list[str]) -> dict[str, str]:
    """`fetch_model` on each of `nodes` (Ray node ids), in parallel; node → where the model is there."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    fetch = ray.remote(fetch_model)
    refs = {n: fetch.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False))
            .remote(model_path) for n in nodes}
    return dict(zip(refs, ray.get(list(refs.values())), strict=True))
