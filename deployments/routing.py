"""Routing weights per SLA class, and the deterministic weighted choice of a configuration.

Smooth weighted round-robin (as in nginx): over any window the share of requests each configuration
gets stays within one request of its weight's share, so experiments see the split they asked for.
"""

from collections.abc import Mapping

Weights = dict[str, dict[str, float]]  # class -> {configuration: weight}


class RoutingError(ValueError):
    """Weights that cannot be applied; the message names the class / configuration at fault."""


def routing_error_message(e: RoutingError) -> str:
    """The message of a RoutingError, also when it was raised in the routing store and arrives through a
    Serve call (Ray's RayTaskError, which is a RoutingError too and names the original as `cause`)."""
    cause = getattr(e, "cause", None)
    return str(cause if isinstance(cause, RoutingError) else e)


def held_classes(weights: Weights) -> list[str]:
    """The classes whose row routes nowhere (no configuration of weight > 0): the ingress holds their requests."""
    return [c for c, row in weights.items() if not any(w > 0 for w in row.values())]


def uniform_weights(classes: list[str], configs: list[str]) -> Weights:
    return {c: dict.fromkeys(configs, 1.0) for c in classes}


def check_weights(update: Mapping[str, Mapping[str, float]], classes: list[str], configs: list[str] | None,
                  allow_hold: bool = False) -> Weights:
    """Validate a (partial) update: known classes and configurations (any name when `configs` is None),
    weights ≥ 0, some weight > 0 in every row unless `allow_hold` (an empty or all-zero row holds the class)."""
    if not isinstance(update, Mapping):
        raise RoutingError("weights must be a mapping: class -> {configuration: weight}")
    out: Weights = {}
    for cls, row in update.items():
        if cls not in classes:
            raise RoutingError(f"unknown SLA class {cls!r}; use one of {', '.join(classes)}")
        if not isinstance(row, Mapping) or not (row or allow_hold):
            raise RoutingError(f"{cls}: give a non-empty mapping configuration -> weight")
        clean: dict[str, float] = {}
        for cfg, w in row.items():
            if configs is not None and cfg not in configs:
                raise RoutingError(f"{cls}: unknown configuration {cfg!r}; use one of {', '.join(configs)}")
            if isinstance(w, bool) or not isinstance(w, int | float) or w != w or w < 0 or w == float("inf"):
                raise RoutingError(f"{cls}.{cfg}: weight must be a finite number ≥ 0, got {w!r}")
            clean[cfg] = float(w)
        if sum(clean.values()) <= 0 and not allow_hold:
            raise RoutingError(f"{cls}: at least one configuration needs a weight > 0")
        out[cls] = clean
    return out


class WeightedRoundRobin:
    """Per-class smooth weighted round-robin over configurations."""

    def __init__(self, weights: Weights):
        self._weights: Weights = {}
        self._current: dict[str, dict[str, float]] = {}
        self.update(weights)

    @property
    def weights(self) -> Weights:
        return {c: dict(row) for c, row in self._weights.items()}

    def update(self, weights: Weights) -> None:
        """Replace the rows of the classes given; the others keep their weights."""
        for cls, row in weights.items():
            self._weights[cls] = {cfg: w for cfg, w in row.items() if w > 0}
            self._current[cls] = dict.fromkeys(self._weights[cls], 0.0)

    def held(self, sla_class: str) -> bool:
        """Whether the class's row routes nowhere (the ingress holds its requests)."""
        return not self._weights.get(sla_class)

    def choose(self, sla_class: str) -> str:
        row = self._weights[sla_class]
        current = self._current[sla_class]
        total = 0.0
        for cfg, w in row.items():
            current[cfg] += w
            total += w
        best = max(current, key=lambda cfg: current[cfg])
        current[best] -= total
        return best
