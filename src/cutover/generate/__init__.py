"""Alerts and dashboards as code: Prometheus rules and a Grafana dashboard of cutover's."""
