"""agentwatch dashboards as code: Grafana dashboards rendered to committed JSON under deploy/grafana,
and the generators of the deploy files that embed the committed artifacts (``deploy_sync``, and
``agentwatch generate``, which runs every generator in order).

This root may import the metric and label names (``agentwatch.collectors.metric_names``) and the
semantic contract (``agentwatch.instrumentation.semconv``), and nothing else of agentwatch.
"""

from __future__ import annotations

__all__: list[str] = []
