"""Render every agentwatch dashboard to the JSON Grafana provisions, and check committed files are current.

``render_all()`` is the single source of the committed ``deploy/grafana/dashboards/*.json``:
regenerating must change nothing, which a test and ``agentwatch dashboards --check`` verify.
Output is deterministic (sorted keys, two-space indent, trailing newline, panel ids numbered in
order), so a diff of the committed files shows exactly what a code change did.

The SDK build pinned here writes a few fields that Grafana's current dashboard schema no longer
has (dashboard ``style``, removed in Grafana 11; a variable ``id`` and the interval-only ``auto*``
keys on every variable) and ``"options": null`` on panels without options. Grafana ignores them,
but a schema-valid file is easier to trust, so ``_normalise`` drops them. It adds one field the SDK
model lacks: a query variable whose query is an object (the ClickHouse plugin's) gets the SQL as
its ``definition``, the text Grafana lists the variable by (the editor writes it too).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from agentwatch.dashboards import canary, collector, overview, runs, tools

DASHBOARD_MODULES: Final[tuple[ModuleType, ...]] = (overview, canary, runs, tools, collector)
"""Each module has ``UID``, ``SLUG``, ``TITLE`` and ``build()``; the file is ``<SLUG>.json``."""

_LEGACY_VARIABLE_KEYS: Final = ("id", "auto", "auto_min", "auto_count")


def _panels(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel in layout order, rows and the panels of collapsed rows included."""
    for panel in document.get("panels") or []:
        yield panel
        yield from panel.get("panels") or []


def _normalise(document: dict[str, Any]) -> dict[str, Any]:
    document.pop("style", None)
    for variable in document.get("templating", {}).get("list") or []:
        for key in _LEGACY_VARIABLE_KEYS:
            if key == "id" or variable.get("type") != "interval":
                variable.pop(key, None)
        query = variable.get("query")
        if isinstance(query, dict) and isinstance(query.get("rawSql"), str):
            variable["definition"] = query["rawSql"]
    for panel_id, panel in enumerate(_panels(document), start=1):
        panel["id"] = panel_id
        if panel.get("type") != "row" and panel.get("options") is None:
            panel["options"] = {}
    return document


def dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON document, for every agentwatch dashboard."""
    documents: dict[str, dict[str, Any]] = {}
    for module in DASHBOARD_MODULES:
        document: dict[str, Any] = json.loads(json.dumps(module.build(), cls=JSONEncoder))
        documents[f"{module.SLUG}.json"] = _normalise(document)
    return documents


def render_all() -> dict[str, str]:
    """File name -> JSON text (sorted keys, trailing newline)."""
    return {
        name: json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        for name, document in dashboards().items()
    }


def _is_ours(path: Path) -> bool:
    """Whether ``path`` is a dashboard this module wrote once (so removing it is safe)."""
    try:
        uid = json.loads(path.read_text(encoding="utf-8")).get("uid")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(uid, str) and uid.startswith("agentwatch-")


def write_all(out_dir: Path) -> list[Path]:
    """Write every dashboard to ``out_dir`` (created if needed); remove agentwatch dashboards no longer built.

    Returns the paths written. Files are rewritten only when their content changed, so file times
    (and Grafana's provisioning, which polls them) stay quiet on a no-op run.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rendered = render_all()
    written: list[Path] = []
    for name, text in rendered.items():
        path = out_dir / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    for path in sorted(out_dir.glob("*.json")):
        if path.name not in rendered and _is_ours(path):
            path.unlink()
    return written


def stale_files(out_dir: Path) -> list[str]:
    """Names of files in ``out_dir`` that differ from ``render_all()``: changed, missing, or left over."""
    rendered = render_all()
    stale = [
        name
        for name, text in rendered.items()
        if not (out_dir / name).is_file() or (out_dir / name).read_text(encoding="utf-8") != text
    ]
    if out_dir.is_dir():
        stale += [path.name for path in sorted(out_dir.glob("*.json")) if path.name not in rendered and _is_ours(path)]
    return stale


__all__ = ["DASHBOARD_MODULES", "dashboards", "render_all", "stale_files", "write_all"]
