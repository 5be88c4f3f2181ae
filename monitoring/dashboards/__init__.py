"""Grafana dashboards as code: panels described as data (model), rendered to Grafana JSON (render)."""
