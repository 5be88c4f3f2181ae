from pathlib import Path

import pytest

from deployments.catalog.memory import kv_bytes_per_token
from deployments.catalog.models import MODELS
from schema.dtypes import Dtype


@pytest.mark.parametrize(("name", "published"), [
    ("llama-3.1-8b", 8.03e9), ("llama-3.1-70b", 70.6e9), ("llama-3.1-405b", 405.9e9), ("llama-2-70b", 68.98e9),
])
def test_parameter_counts_match_published(name: str, published: float) -> None:
    assert MODELS[name].num_params == pytest.approx(published, rel=0.01)


def test_kv_bytes_per_token_70b_bf16() -> None:
    # 80 layers × 2 (K,V) × 8 KV heads × 128 × 2 bytes = 327,680 bytes per token on one GPU.
    assert kv_bytes_per_token(MODELS["llama-3.1-70b"], Dtype.bf16, 1, 1) == 327_680


def test_hf_config_is_read(tmp_path: Path) -> None:
    import json

    from deployments.catalog.models import resolve_model

    (tmp_path / "config.json").write_text(json.dumps({
        "num_hidden_layers": 4, "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 1024, "max_position_embeddings": 2048,
        "tie_word_embeddings": True,
    }))
    m = resolve_model(str(tmp_path))
    assert (m.num_layers, m.head_dim, m.num_kv_heads, m.max_context) == (4, 64, 2, 2048)
    # tied embeddings count once: 4 layers + one vocab×hidden matrix + final norm
    assert m.num_params == 4 * m.params_per_layer + 1024 * 256 + 256


def test_hf_config_missing_fields_is_clear(tmp_path: Path) -> None:
    from deployments.catalog.models import model_from_hf_config

    (tmp_path / "config.json").write_text('{"hidden_size": 8}')
    with pytest.raises(ValueError, match="missing num_hidden_layers"):
        model_from_hf_config(tmp_path)


def test_user_gpu_yaml(tmp_path: Path) -> None:
    from deployments.catalog.gpus import resolve_gpu

    p = tmp_path / "gpu.yaml"
    p.write_text("name: my-gpu\nfamily: hopper\nmemory_gb: 96\nhbm_tbps: 4\npeak_tflops: {bf16: 900}\n"
                 "link: {topology: switch, bandwidth_gbps: 900}\n")
    g = resolve_gpu(str(p))
    assert g.memory_bytes == 96e9 and g.peak_flops(Dtype.bf16) == 900e12
    p.write_text("name: my-gpu\nfamily: hopper\nmemory_gb: -1\nhbm_tbps: 4\npeak_tflops: {bf16: 900}\n"
                 "link: {topology: switch, bandwidth_gbps: 900}\n")
    with pytest.raises(ValueError, match="field memory_gb"):
        resolve_gpu(str(p))


def test_weight_only_formats_fall_back_to_a_wider_compute_dtype() -> None:
    from deployments.catalog.gpus import GPUS

    assert GPUS["a100-80g"].compute_dtype(Dtype.fp8) == Dtype.bf16
    assert GPUS["h100-sxm"].compute_dtype(Dtype.fp4) == Dtype.fp8
    assert GPUS["b200"].compute_dtype(Dtype.fp4) == Dtype.fp4


def test_mesh_links_scale_with_group_size_and_switch_does_not() -> None:
    from deployments.catalog.gpus import GPUS

    mesh, switch = GPUS["mi325x"].link, GPUS["h100-sxm"].link
    assert mesh.group_bandwidth(8) == 7 * mesh.group_bandwidth(2)
    assert switch.group_bandwidth(8) == switch.group_bandwidth(2) == 450e9


def test_kv_heads_replicate_beyond_their_count() -> None:
    from deployments.catalog.memory import kv_heads_per_gpu

    m = MODELS["llama-3.1-70b"]
    assert [kv_heads_per_gpu(m, t) for t in (1, 2, 4, 8, 16)] == [8, 4, 2, 1, 1]


def test_pp_shrinks_weights_and_grows_kv_capacity() -> None:
    from deployments.catalog.gpus import GPUS
    from deployments.catalog.memory import plan_memory

    m, g = MODELS["llama-3.1-70b"], GPUS["mi325x"]
    p1 = plan_memory(m, g, Dtype.fp8, Dtype.bf16, 1, 1)
    p8 = plan_memory(m, g, Dtype.fp8, Dtype.bf16, 1, 8)
    assert p8.weight_bytes < p1.weight_bytes / 6
    assert p8.kv_tokens > 8 * p1.kv_tokens  # per-token KV cost falls 8×, and more memory is free


def test_a_folder_given_as_gpu_spec_is_a_clear_error(tmp_path: Path) -> None:
    from deployments.catalog.gpus import resolve_gpu

    with pytest.raises(ValueError, match="cannot read it"):
        resolve_gpu(str(tmp_path))
