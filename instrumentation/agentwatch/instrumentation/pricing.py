"""Cost of LLM calls from a table of list prices in USD per million tokens.

The shipped prices are data, not code: ``pricing.json`` next to this module holds the input, output
and cached-input rate of current OpenAI, Anthropic and Google models together with the date they
were checked (``as_of``). It is read with ``importlib.resources`` the first time
``PriceTable.default()`` is called, never at import time, and kept for the life of the process.
List prices go stale and contracts differ, so a table can be overridden (``with_overrides``, fed by
the ``pricing:`` mapping of the config file) or replaced by a user file (``load_price_file``).
Model names reported by SDKs rarely match the table exactly, so ``lookup`` also strips provider
prefixes (``openai/gpt-4o``) and resolves dated snapshots (``gpt-4o-mini-2024-07-18``) to their
family. A model that cannot be resolved has no price: ``cost`` returns ``None`` and the caller
records the call as unpriced; it is never silently counted as free.
"""

from __future__ import annotations

import datetime
import functools
import importlib.resources
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import yaml

from agentwatch.instrumentation.errors import ConfigError

__all__ = ["ModelPrice", "PriceTable", "load_price_file"]

_DATA_PACKAGE: Final = "agentwatch.instrumentation"
_DATA_FILE: Final = "pricing.json"
_TOKENS_PER_UNIT: Final = 1_000_000
_CURRENCY: Final = "USD"
_UNIT: Final = "per_million_tokens"
_PRICE_KEYS: Final = ("input", "output", "cached_input", "provider")
_FILE_FIELD: Final = "pricing_file"

# Model names come from spans, so their number is open-ended; the bound keeps a process that sees
# many distinct names (fine-tunes, per-tenant deployments) from growing the cache without limit.
_LOOKUP_CACHE_SIZE: Final = 1024

# A one- or two-digit segment right after a known family name is a different version of that
# family (``claude-opus-4-6`` next to ``claude-opus-4``), not a snapshot of it: snapshots carry
# dates (``-20250514``, ``-2024-07-18``) or build numbers (``-001``, ``-0613``). Versions of one
# family have been priced up to 3x apart, so such a name stays unpriced rather than borrowing its
# sibling's price. ``-0`` is the exception: ``claude-opus-4-0`` is an alias of ``claude-opus-4``.
_OTHER_VERSION: Final = re.compile(r"[1-9][0-9]?")


def _check_rate(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0 (USD per million tokens), got {value!r}")


def _check_tokens(input_tokens: int, output_tokens: int, cached_input_tokens: int) -> None:
    for name, value in (
        ("input_tokens", input_tokens),
        ("output_tokens", output_tokens),
        ("cached_input_tokens", cached_input_tokens),
    ):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if cached_input_tokens > input_tokens:
        raise ValueError(
            f"cached_input_tokens ({cached_input_tokens}) exceeds input_tokens ({input_tokens}): "
            "cached tokens are the part of the input served from the prompt cache, not extra tokens"
        )


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """Prices of one model in USD per million tokens.

    ``cached_input_per_mtok`` is the rate of input tokens served from the prompt cache (Anthropic's
    cache read); ``None`` means the model has no cached rate and cached tokens cost the input rate.
    """

    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None
    provider: str | None = None

    def __post_init__(self) -> None:
        _check_rate("input_per_mtok", self.input_per_mtok)
        _check_rate("output_per_mtok", self.output_per_mtok)
        if self.cached_input_per_mtok is not None:
            _check_rate("cached_input_per_mtok", self.cached_input_per_mtok)
            # A cached rate above the input rate is a typo (swapped fields, or a cache *write*
            # price); taking it would make caching look like it costs money.
            if self.cached_input_per_mtok > self.input_per_mtok:
                raise ValueError(
                    f"cached_input_per_mtok ({self.cached_input_per_mtok:g}) exceeds input_per_mtok "
                    f"({self.input_per_mtok:g}); the cached rate is a discount on the input rate"
                )

    def cost(self, *, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> float:
        """USD cost of a call; ``cached_input_tokens`` is the part of ``input_tokens`` read from cache."""
        _check_tokens(input_tokens, output_tokens, cached_input_tokens)
        cached_rate = self.input_per_mtok if self.cached_input_per_mtok is None else self.cached_input_per_mtok
        # Sum token x rate first and divide once: fewer rounding steps than dividing per term.
        total = (
            (input_tokens - cached_input_tokens) * self.input_per_mtok
            + cached_input_tokens * cached_rate
            + output_tokens * self.output_per_mtok
        )
        return total / _TOKENS_PER_UNIT


class PriceTable:
    """An immutable set of model prices with tolerant name resolution; see ``lookup``."""

    __slots__ = ("_as_of", "_lookup", "_prices")

    _lookup: Callable[[str], ModelPrice | None]

    def __init__(self, prices: Mapping[str, ModelPrice], *, as_of: str | None = None) -> None:
        table: dict[str, ModelPrice] = {}
        for name, price in prices.items():
            key = name.strip().lower()
            if not key:
                raise ValueError("model names must be non-empty")
            table[key] = price
        self._prices: dict[str, ModelPrice] = table
        self._as_of = as_of
        # One cache per table: overrides produce a new table, so no entry can outlive its prices.
        # lru_cache guards its own bookkeeping, so concurrent lookups are safe; a race at worst
        # resolves the same name twice, which yields the same answer.
        self._lookup = functools.lru_cache(maxsize=_LOOKUP_CACHE_SIZE)(self._resolve)

    @classmethod
    def default(cls) -> PriceTable:
        """The shipped list prices, read from ``pricing.json`` on first use and then reused."""
        return _default_table()

    @property
    def as_of(self) -> str | None:
        """Date (``YYYY-MM-DD``) the prices were checked, if the source said."""
        return self._as_of

    def models(self) -> list[str]:
        """Known model names (lower case), sorted."""
        return sorted(self._prices)

    def with_overrides(self, overrides: Mapping[str, ModelPrice | Mapping[str, float | str | None]]) -> PriceTable:
        """A new table where ``overrides`` replace or add models; this table is left unchanged.

        A mapping value uses the keys of the JSON file (``input``, ``output``, ``cached_input``,
        ``provider``) and replaces the whole entry: an override is a negotiated price list, so a
        list-price cached rate must not leak into it. Bad values raise ``ConfigError`` naming the
        field (``pricing.gpt-4o.input``).
        """
        merged = dict(self._prices)
        merged.update(_parse_models(overrides, field="pricing", source=None))
        return PriceTable(merged, as_of=self._as_of)

    def lookup(self, model: str) -> ModelPrice | None:
        """Price of ``model``, or ``None`` when it cannot be resolved.

        In order: the exact name (case-insensitive); the name without a provider or resource
        prefix (``openai/gpt-4o``, ``models/gemini-2.5-pro``; a Vertex ``@`` version separator
        counts as ``-``); then the longest known name that is followed by ``-`` in it, so
        ``gpt-4o-mini-2024-07-18`` is ``gpt-4o-mini`` and ``claude-sonnet-4-5-20250929`` is
        ``claude-sonnet-4-5``. A name that is ambiguous (``gpt-4o-minifoo``: a longer known name
        is a plain prefix of it) or names another version of a family (``claude-opus-4-6``) is
        left unpriced rather than guessed.
        """
        return self._lookup(model)

    def cost(self, model: str, *, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> float | None:
        """USD cost of a call to ``model``, or ``None`` when the model is unpriced (never 0.0 by default)."""
        # Validate before the lookup so bad counts surface even for unpriced models.
        _check_tokens(input_tokens, output_tokens, cached_input_tokens)
        price = self.lookup(model)
        if price is None:
            return None
        return price.cost(
            input_tokens=input_tokens, output_tokens=output_tokens, cached_input_tokens=cached_input_tokens
        )

    def __repr__(self) -> str:
        return f"PriceTable({len(self._prices)} models, as_of={self._as_of!r})"

    def _resolve(self, model: str) -> ModelPrice | None:
        name = model.strip().lower()
        if not name:
            return None
        price = self._prices.get(name)
        if price is not None:
            return price
        bare = name.rsplit("/", 1)[-1].replace("@", "-")
        if bare != name:
            price = self._prices.get(bare)
            if price is not None:
                return price
        return self._resolve_snapshot(bare)

    def _resolve_snapshot(self, name: str) -> ModelPrice | None:
        # Cutting at each '-' from the right visits the dash-bounded prefixes longest first, so the
        # first hit is the longest known family and `gpt-4o-minifoo` can never become `gpt-4o-mini`.
        head = name
        while "-" in head:
            head = head.rsplit("-", 1)[0]
            price = self._prices.get(head)
            if price is None:
                continue
            suffix = name[len(head) + 1 :]
            if _OTHER_VERSION.fullmatch(suffix.split("-", 1)[0]):
                return None
            # `gpt-4o-minifoo` is `gpt-4o` + `-minifoo` by the rule, but it reads as a mangled
            # `gpt-4o-mini`; when a longer known name is a plain prefix, refuse to pick either.
            if any(len(known) > len(head) and name.startswith(known) for known in self._prices):
                return None
            return price
        return None


def _rate(entry: Mapping[object, object], key: str, field: str, source: str | None) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{field}.{key}", f"must be a number (USD per million tokens), got {value!r}", source=source)
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{field}.{key}", f"must be a finite number >= 0, got {value!r}", source=source)
    return float(value)


def _required_rate(entry: Mapping[object, object], key: str, field: str, source: str | None) -> float:
    value = _rate(entry, key, field, source)
    if value is None:
        raise ConfigError(f"{field}.{key}", "is required (USD per million tokens)", source=source)
    return value


def _parse_price(raw: object, field: str, source: str | None) -> ModelPrice:
    if isinstance(raw, ModelPrice):
        return raw
    if not isinstance(raw, Mapping):
        raise ConfigError(
            field, f"expected a mapping with keys {', '.join(_PRICE_KEYS)}, got {type(raw).__name__}", source=source
        )
    for key in raw:
        if key not in _PRICE_KEYS:
            raise ConfigError(f"{field}.{key}", f"unknown key; expected one of {', '.join(_PRICE_KEYS)}", source=source)
    input_rate = _required_rate(raw, "input", field, source)
    output_rate = _required_rate(raw, "output", field, source)
    cached_rate = _rate(raw, "cached_input", field, source)
    if cached_rate is not None and cached_rate > input_rate:
        raise ConfigError(
            f"{field}.cached_input",
            f"{cached_rate:g} exceeds input {input_rate:g}; the cached rate is a discount on the input rate",
            source=source,
        )
    provider = raw.get("provider")
    if provider is not None and not (isinstance(provider, str) and provider.strip()):
        raise ConfigError(f"{field}.provider", f"must be a non-empty string, got {provider!r}", source=source)
    return ModelPrice(input_rate, output_rate, cached_rate, provider)


def _parse_models(raw: object, field: str, source: str | None) -> dict[str, ModelPrice]:
    if not isinstance(raw, Mapping):
        raise ConfigError(field, f"expected a mapping of model name to prices, got {type(raw).__name__}", source=source)
    prices: dict[str, ModelPrice] = {}
    for name, entry in raw.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(field, f"model names must be non-empty strings, got {name!r}", source=source)
        key = name.strip().lower()
        if key in prices:
            raise ConfigError(f"{field}.{name}", "defined twice (model names are case-insensitive)", source=source)
        prices[key] = _parse_price(entry, f"{field}.{name}", source)
    return prices


def _parse_document(data: object, source: str) -> PriceTable:
    if not isinstance(data, Mapping):
        raise ConfigError(_FILE_FIELD, "expected a mapping with a 'models' key", source=source)
    # Only USD per million tokens is understood; a table in another unit would be off by orders of
    # magnitude without a single error, so refuse it.
    currency = data.get("currency", _CURRENCY)
    if currency != _CURRENCY:
        raise ConfigError("currency", f"only {_CURRENCY} is supported, got {currency!r}", source=source)
    unit = data.get("unit", _UNIT)
    if unit != _UNIT:
        raise ConfigError("unit", f"only {_UNIT} is supported, got {unit!r}", source=source)
    as_of = data.get("as_of")
    # YAML reads an unquoted 2025-11-25 as a date, which is what the user meant.
    if isinstance(as_of, datetime.date):
        as_of = as_of.isoformat()
    if as_of is not None and not isinstance(as_of, str):
        raise ConfigError("as_of", f"must be a date (YYYY-MM-DD), got {as_of!r}", source=source)
    if "models" not in data:
        raise ConfigError("models", "is required: a mapping of model name to prices", source=source)
    prices = _parse_models(data["models"], "models", source)
    if not prices:
        raise ConfigError("models", "defines no model", source=source)
    return PriceTable(prices, as_of=as_of)


@functools.cache
def _default_table() -> PriceTable:
    # functools.cache makes the shipped table a process-wide singleton; two threads racing on the
    # first call may both parse the file, which is harmless since the results are equal.
    resource = importlib.resources.files(_DATA_PACKAGE).joinpath(_DATA_FILE)
    return _parse_document(json.loads(resource.read_text(encoding="utf-8")), source=f"{_DATA_PACKAGE}/{_DATA_FILE}")


def load_price_file(path: str | os.PathLike[str]) -> PriceTable:
    """A price table from a JSON or YAML file shaped like the shipped ``pricing.json``.

    ``.yaml``/``.yml`` files are read with ``yaml.safe_load``, ``.json`` with ``json``; an
    unreadable file or bad content raises ``ConfigError`` naming the field and the file.
    """
    file = Path(path)
    source = str(file)
    suffix = file.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise ConfigError(
            _FILE_FIELD, f"unsupported extension {suffix or '(none)'!r}; use .json, .yaml or .yml", source=source
        )
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(_FILE_FIELD, f"cannot read the file: {exc}", source=source) from exc
    data: object
    try:
        data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if suffix == ".json" else "YAML"
        raise ConfigError(_FILE_FIELD, f"not valid {kind}: {exc}", source=source) from exc
    return _parse_document(data, source)
