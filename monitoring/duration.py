"""Durations in Prometheus' syntax."""


def prometheus_duration(seconds: float) -> str:
    """Seconds as a Prometheus duration: whole seconds as `2s`, fractions as `1500ms` (`1.5s` is refused)."""
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"
