"""Label values of the collector's metrics: cleaned, from closed sets, or capped per agent.

Cardinality is bounded by construction, because one misbehaving agent must not be able to take
Prometheus down: label values come from closed sets (stop reason, track, disposition, outcome,
budget: anything else becomes ``other``) or from per-agent capped sets (tools, models, versions:
the first N distinct values keep their name, later ones become ``other``); agents themselves are
capped; every value is length-capped and made printable. No run, trace, span, tenant or user id is
ever a label.

Nothing here is thread-safe on its own: ``CollectorMetrics`` calls it under its lock.
"""

from __future__ import annotations

from typing import Final

from agentwatch.collectors.metric_names import MAX_LABEL_LENGTH, OTHER, UNKNOWN
from agentwatch.instrumentation import semconv

_TRACKS: Final = frozenset(track.value for track in semconv.Track)
_DISPOSITIONS: Final = frozenset(disposition.value for disposition in semconv.ToolDisposition)
_OUTCOMES: Final = frozenset(outcome.value for outcome in semconv.ToolOutcome)
_BUDGETS: Final = frozenset(budget.value for budget in semconv.BudgetName)
_RESERVED: Final = frozenset({OTHER, UNKNOWN})


def clean_label(value: object, max_length: int = MAX_LABEL_LENGTH) -> str:
    """A label value from an attribute: a string, length-capped, printable, ``unknown`` when empty."""
    text = value if type(value) is str else _text(value)
    if not text:
        return UNKNOWN
    text = text[:max_length]
    if not text.isprintable():
        # control characters and lone surrogates (from JSON escapes) would break the text exposition
        text = "".join(char if char.isprintable() else "_" for char in text)
    return text


def _text(value: object) -> str:
    """Any non-str attribute value as text; rows should carry only str, but a bad row must not raise."""
    if value is None:
        return ""
    try:
        return str(value)
    except ValueError:  # an int beyond sys.get_int_max_str_digits()
        return ""


def _closed(value: object, allowed: frozenset[str]) -> str:
    """A label from a closed set: the value itself when valid, else ``other`` (missing included)."""
    return value if type(value) is str and value in allowed else OTHER


class _CappedValues:
    """The first ``cap`` distinct values keep their name; later ones map to ``other``."""

    __slots__ = ("_cap", "_max_length", "_seen")

    def __init__(self, cap: int, max_length: int) -> None:
        self._cap = cap
        self._max_length = max_length
        self._seen: set[str] = set()

    def __call__(self, value: object) -> str:
        if type(value) is str and value in self._seen:
            return value  # fast path: seen values are clean labels already
        label = clean_label(value, self._max_length)
        if label in self._seen or label in _RESERVED:
            return label
        if len(self._seen) < self._cap:
            self._seen.add(label)
            return label
        return OTHER


class _AgentLabels:
    """Label state of one agent label: its name and its capped tools, models and versions."""

    __slots__ = ("label", "models", "tools", "versions")

    def __init__(self, label: str, *, tools: int, models: int, versions: int, max_length: int) -> None:
        self.label = label
        self.tools = _CappedValues(tools, max_length)
        self.models = _CappedValues(models, max_length)
        self.versions = _CappedValues(versions, max_length)


class _Agents:
    """The agent labels: the first ``max_agents`` distinct names keep theirs, later ones share ``other``."""

    __slots__ = ("_by_label", "_max_agents", "_max_length", "_models", "_other", "_tools", "_unknown", "_versions")

    def __init__(self, *, max_agents: int, tools: int, models: int, versions: int, max_length: int) -> None:
        self._max_agents = max_agents
        self._max_length = max_length
        self._tools = tools
        self._models = models
        self._versions = versions
        self._by_label: dict[str, _AgentLabels] = {}
        self._other = self._new(OTHER)
        self._unknown = self._new(UNKNOWN)

    def _new(self, label: str) -> _AgentLabels:
        return _AgentLabels(
            label, tools=self._tools, models=self._models, versions=self._versions, max_length=self._max_length
        )

    def __call__(self, name: object) -> _AgentLabels:
        """The label state of the agent ``name`` (an attribute value, cleaned and capped)."""
        if type(name) is str:
            state = self._by_label.get(name)  # fast path: a name seen before is its own (clean) label
            if state is not None:
                return state
        label = clean_label(name, self._max_length)
        state = self._by_label.get(label)
        if state is not None:
            return state
        if label == UNKNOWN:
            return self._unknown
        if label == OTHER or len(self._by_label) >= self._max_agents:
            return self._other
        state = self._by_label[label] = self._new(label)
        return state


__all__ = ["clean_label"]
