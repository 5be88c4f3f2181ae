"""Applies routing weights through the ingress's `PUT /v1/routing`."""

import httpx

from controllers.policies import Weights


class RoutingUpdateError(RuntimeError):
    """The ingress did not accept the weights."""


class HttpRouter:
    """Router over HTTP; one short-timeout client reused across updates."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 15.0):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s, headers=headers,
                                  trust_env=False)

    def set_weights(self, weights: Weights) -> None:
        try:
            resp = self._http.put("/v1/routing", json={"weights": weights})
        except httpx.HTTPError as e:
            raise RoutingUpdateError(f"ingress unreachable: {type(e).__name__}: {e}") from None
        if resp.status_code != 200:
            raise RoutingUpdateError(f"ingress refused the weights: HTTP {resp.status_code} {resp.text[:300]}")

    def get_weights(self) -> Weights:
        resp = self._http.get("/v1/routing")
        resp.raise_for_status()
        weights: Weights = resp.json()["weights"]
        return weights

    def close(self) -> None:
        self._http.close()
