"""The model's files on a node: a folder checked, a Hugging Face repository fetched from the node's cache (offline
here), and every failure a clear line naming the node and the fix."""

import json
import socket
from pathlib import Path

import pytest
from huggingface_hub import constants

from deployments.engines.vllm.model_files import ModelFilesError, fetch_model, is_hub_id, model_path_problem

REPO = "example-org/tiny-llama"


def hub_cache(root: Path) -> Path:
    """A Hugging Face cache holding one snapshot of REPO, laid out as huggingface_hub writes it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / "hub" / f"models--{REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def test_a_folder_with_its_config_is_the_model(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert model_path_problem(str(tmp_path)) is None
    assert fetch_model(str(tmp_path)) == str(tmp_path)


def test_a_missing_folder_names_this_node_and_the_fix(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere")
    with pytest.raises(ModelFilesError, match=rf"nowhere: no such folder on {socket.gethostname()}; .*repository id"):
        fetch_model(missing)


def test_a_folder_without_config_is_not_a_model(tmp_path: Path) -> None:
    assert "has no config.json" in (model_path_problem(str(tmp_path)) or "")


def test_hub_ids_are_told_from_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_hub_id("RedHatAI/Meta-Llama-3.1-70B-Instruct-FP8")
    assert not is_hub_id("/models/llama") and not is_hub_id("../.cache/tiny-llama") and not is_hub_id("llama")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert not is_hub_id("org/name")   # an existing folder wins


def offline(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No network, and `cache` as the node's Hugging Face cache (HF_HUB_OFFLINE and HF_HUB_CACHE, as
    huggingface_hub read them from the environment when it was imported)."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache / "hub"))


def test_a_repository_comes_from_the_nodes_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    offline(tmp_path, monkeypatch)
    snapshot = hub_cache(tmp_path)
    assert fetch_model(REPO) == str(snapshot)


def test_a_repository_that_cannot_be_fetched_names_the_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    offline(tmp_path, monkeypatch)
    with pytest.raises(ModelFilesError, match=rf"{REPO}: cannot download it on {socket.gethostname()}: .*HF_TOKEN"):
        fetch_model(REPO)
