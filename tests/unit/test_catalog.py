import pytest

from deployments.catalog.dtypes import Dtype
from deployments.catalog.memory import kv_bytes_per_token
from deployments.catalog.models import MODELS


@pytest.mark.parametrize(("name", "published"), [
    ("llama-3.1-8b", 8.03e9), ("llama-3.1-70b", 70.6e9), ("llama-3.1-405b", 405.9e9),
])
def test_parameter_counts_match_published(name: str, published: float) -> None:
    assert MODELS[name].num_params == pytest.approx(published, rel=0.01)


def test_kv_bytes_per_token_70b_bf16() -> None:
    # 80 layers × 2 (K,V) × 8 KV heads × 128 × 2 bytes = 327,680 bytes per token on one GPU.
    assert kv_bytes_per_token(MODELS["llama-3.1-70b"], Dtype.bf16, 1, 1) == 327_680
