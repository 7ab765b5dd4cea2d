"""agentwatch dashboards as code: Grafana dashboards rendered to committed JSON under deploy/grafana.

This root may import the metric-name constants of the collector and the semantic contract, and
nothing else of agentwatch.
"""

from __future__ import annotations

__all__: list[str] = []
