"""vLLM's Ray metric wrappers with the testbed's config/tp/pp labels (no Ray cluster needed)."""

import pytest

pytestmark = pytest.mark.vllm

from vllm.v1.metrics.ray_wrappers import RayCounterWrapper, RayGaugeWrapper  # noqa: E402

from deployments.engines.vllm.stat_logger import _with_labels  # noqa: E402
from monitoring.metrics import ENGINE_LABELS, NUM_REQUESTS_RUNNING  # noqa: E402

EXTRA = {"config": "tp2", "tp": "2", "pp": "1"}


def test_every_engine_label_of_the_contract_is_a_tag_key() -> None:
    gauge = _with_labels(RayGaugeWrapper, EXTRA)(
        name=f"vllm:{NUM_REQUESTS_RUNNING}", documentation="d", labelnames=["model_name", "engine"])
    assert set(ENGINE_LABELS) <= set(gauge.metric._tag_keys)
    assert gauge.metric._name == f"vllm_{NUM_REQUESTS_RUNNING}"


def test_positional_labels_get_the_configuration_and_engine_name() -> None:
    counter = _with_labels(RayCounterWrapper, EXTRA)(name="vllm:x", labelnames=["model_name", "engine"])
    tags = counter.labels("tp2", 0)._tags
    assert tags == {"model_name": "tp2", "engine": "vllm", "ReplicaId": "", **EXTRA}


def test_keyword_labels_and_wrong_counts() -> None:
    counter = _with_labels(RayCounterWrapper, EXTRA)(name="vllm:y", labelnames=["model_name", "engine", "reason"])
    assert counter.labels(model_name="tp2", engine=0, reason="stop")._tags["reason"] == "stop"
    with pytest.raises(ValueError, match="expected 3 label values"):
        counter.labels("tp2", 0)
