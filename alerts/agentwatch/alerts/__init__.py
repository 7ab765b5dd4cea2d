"""agentwatch alerts as code: Prometheus recording and alerting rules, and their runbook, from one source.

Mixin-style, split by concern: ``options`` (the knobs, ``RuleOptions``), ``promql`` (number, window
and aggregation helpers), ``model`` (recording rules, alerts, runbook entries, groups),
``recording`` (rates, ratios and volumes), ``agent``, ``canary`` and ``collector`` (the alerts),
``rules`` (the rule file), ``runbook`` (the runbook), ``render`` (both files: write, check) and
``cli`` (``agentwatch alerts``). The committed output sits beside this package, in ``alerts/``:
``agentwatch-rules.yaml``, ``runbook.md`` and the promtool unit tests in ``alerts/tests/``.

The rules answer the on-call questions of DESIGN.md from the collector's metrics: is an agent
burning its budget-stop error budget (SRE-workbook multi-window, multi-burn-rate alerts), did a
bad stop reason, tool denials or cost spike against the agent's own recent baseline, was the kill
switch pulled, did an agent's traffic vanish, did a canary drift, and is the collector healthy.

This root may import the metric and label names (``agentwatch.collectors.metric_names``) and the
semantic contract (``agentwatch.instrumentation.semconv``), and nothing else of agentwatch.
"""

from __future__ import annotations

__all__: list[str] = []
