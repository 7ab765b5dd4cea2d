"""Tests of the price table: arithmetic, name resolution, overrides, user files and the shipped data."""

from __future__ import annotations

import datetime
import importlib.resources
import json
import math
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from _paths import REPO
from hypothesis import given
from hypothesis import strategies as st

from agentwatch.instrumentation.errors import ConfigError
from agentwatch.instrumentation.pricing import ModelPrice, PriceTable, load_price_file

MTOK = 1_000_000


def _shipped_json() -> dict[str, Any]:
    text = importlib.resources.files("agentwatch.instrumentation").joinpath("pricing.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.default()


# --- arithmetic ------------------------------------------------------------------------------


def test_gpt_4o_one_million_each_costs_input_plus_output_price(table: PriceTable) -> None:
    assert table.cost("gpt-4o", input_tokens=MTOK, output_tokens=MTOK) == pytest.approx(2.50 + 10.00)


def test_cached_tokens_are_billed_at_the_cached_rate(table: PriceTable) -> None:
    # 600k fresh at $3 + 400k cache reads at $0.30, no output.
    cost = table.cost("claude-sonnet-4-5", input_tokens=MTOK, output_tokens=0, cached_input_tokens=400_000)
    assert cost == pytest.approx(0.6 * 3.00 + 0.4 * 0.30)
    uncached = table.cost("claude-sonnet-4-5", input_tokens=MTOK, output_tokens=0)
    assert uncached == pytest.approx(3.00)


def test_small_counts_are_exact_fractions() -> None:
    price = ModelPrice(input_per_mtok=2.0, output_per_mtok=8.0, cached_input_per_mtok=0.5)
    cost = price.cost(input_tokens=1234, output_tokens=567, cached_input_tokens=234)
    assert cost == pytest.approx((1000 * 2.0 + 234 * 0.5 + 567 * 8.0) / MTOK)


def test_model_without_cached_rate_bills_cached_tokens_at_input_rate() -> None:
    price = ModelPrice(input_per_mtok=10.0, output_per_mtok=30.0)
    with_cache = price.cost(input_tokens=MTOK, output_tokens=0, cached_input_tokens=MTOK)
    assert with_cache == pytest.approx(10.0)
    assert with_cache == price.cost(input_tokens=MTOK, output_tokens=0)


def test_zero_tokens_cost_zero_but_unknown_model_costs_none(table: PriceTable) -> None:
    assert table.cost("gpt-4o", input_tokens=0, output_tokens=0) == 0.0
    assert table.cost("totally-unknown-model", input_tokens=10, output_tokens=10) is None


@given(
    input_tokens=st.integers(min_value=0, max_value=10**9),
    output_tokens=st.integers(min_value=0, max_value=10**9),
    cached_share=st.floats(min_value=0.0, max_value=1.0),
)
def test_cost_is_monotone_in_caching_and_additive(input_tokens: int, output_tokens: int, cached_share: float) -> None:
    price = ModelPrice(input_per_mtok=1.25, output_per_mtok=10.0, cached_input_per_mtok=0.125)
    cached = int(input_tokens * cached_share)
    full = price.cost(input_tokens=input_tokens, output_tokens=output_tokens)
    with_cache = price.cost(input_tokens=input_tokens, output_tokens=output_tokens, cached_input_tokens=cached)
    assert 0.0 <= with_cache <= full + 1e-9
    parts = price.cost(input_tokens=input_tokens, output_tokens=0) + price.cost(
        input_tokens=0, output_tokens=output_tokens
    )
    assert full == pytest.approx(parts)
    assert full - with_cache == pytest.approx(cached * (1.25 - 0.125) / MTOK, abs=1e-9)


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_tokens": -1, "output_tokens": 0}, "input_tokens must be >= 0"),
        ({"input_tokens": 0, "output_tokens": -5}, "output_tokens must be >= 0"),
        ({"input_tokens": 10, "output_tokens": 0, "cached_input_tokens": -1}, "cached_input_tokens must be >= 0"),
        ({"input_tokens": 10, "output_tokens": 0, "cached_input_tokens": 11}, "exceeds input_tokens"),
    ],
)
def test_bad_token_counts_raise(table: PriceTable, kwargs: dict[str, int], message: str) -> None:
    price = ModelPrice(input_per_mtok=1.0, output_per_mtok=2.0)
    with pytest.raises(ValueError, match=message):
        price.cost(**kwargs)
    with pytest.raises(ValueError, match=message):
        table.cost("gpt-4o", **kwargs)
    # Unpriced models still reject bad counts: the caller's bug must not hide behind a None.
    with pytest.raises(ValueError, match=message):
        table.cost("no-such-model", **kwargs)


@pytest.mark.parametrize(
    ("rates", "message"),
    [
        ((-1.0, 2.0, None), "input_per_mtok must be a finite number >= 0"),
        ((1.0, math.nan, None), "output_per_mtok must be a finite number >= 0"),
        ((1.0, 2.0, math.inf), "cached_input_per_mtok must be a finite number >= 0"),
        ((1.0, 2.0, 1.5), "exceeds input_per_mtok"),
    ],
)
def test_bad_model_price_raises(rates: tuple[float, float, float | None], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelPrice(*rates)


def test_model_price_is_frozen() -> None:
    price = ModelPrice(input_per_mtok=1.0, output_per_mtok=2.0)
    with pytest.raises(AttributeError):
        price.input_per_mtok = 0.0  # type: ignore[misc]


# --- name resolution ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # the first gpt-4o snapshot had its own, higher price
        ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("gpt-5-mini-2025-08-07", "gpt-5-mini"),
        ("gpt-5-chat-latest", "gpt-5"),
        ("gpt-4-turbo-2024-04-09", "gpt-4-turbo"),
        ("gpt-4-0613", "gpt-4"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("o3-pro-2025-06-10", "o3-pro"),
        ("o4-mini-deep-research-2025-06-26", "o4-mini-deep-research"),
        ("gpt-4o-mini-realtime-preview-2024-12-17", "gpt-4o-mini-realtime-preview"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-opus-4-5-20251101", "claude-opus-4-5"),
        ("claude-opus-4-0", "claude-opus-4"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("gemini-2.0-flash-lite-001", "gemini-2.0-flash-lite"),
        ("gemini-2.5-flash-preview-09-2025", "gemini-2.5-flash"),
        ("gemini-2.5-flash-lite-preview-09-2025", "gemini-2.5-flash-lite"),
        # provider / resource prefixes
        ("openai/gpt-4o", "gpt-4o"),
        ("models/gemini-2.5-pro", "gemini-2.5-pro"),
        ("publishers/google/models/gemini-2.5-flash", "gemini-2.5-flash"),
        ("anthropic/claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        # case and whitespace
        ("GPT-4o", "gpt-4o"),
        ("  Claude-Haiku-4-5  ", "claude-haiku-4-5"),
    ],
)
def test_lookup_resolves(table: PriceTable, name: str, expected: str) -> None:
    price = table.lookup(name)
    assert price is not None, name
    assert price == table.lookup(expected)
    assert price is table.lookup(expected)


@pytest.mark.parametrize(
    "name",
    [
        "gpt-4o-minifoo",  # neither gpt-4o-mini nor gpt-4o: a mangled name is not guessed
        "gpt-5-nanox",
        "gpt-4.5-preview",  # gpt-4.5 is not gpt-4
        "gpt-5.2",
        "claude-opus-4-6",  # a new version of a family is not priced like its sibling
        "claude-sonnet-4-7-20260101",
        "llama-3.1-70b",
        "gpt",
        "",
        "   ",
        "openai/",
    ],
)
def test_lookup_leaves_unknown_names_unpriced(table: PriceTable, name: str) -> None:
    assert table.lookup(name) is None
    assert table.cost(name, input_tokens=100, output_tokens=100) is None


def test_longest_prefix_wins_over_shorter_family(table: PriceTable) -> None:
    mini = table.lookup("gpt-4o-mini-2024-07-18")
    assert mini is not None
    assert mini.input_per_mtok == pytest.approx(0.15)
    assert mini != table.lookup("gpt-4o")


def test_exact_override_of_prefixed_name_wins_over_stripping(table: PriceTable) -> None:
    custom = ModelPrice(input_per_mtok=1.0, output_per_mtok=1.0, provider="azure")
    overridden = table.with_overrides({"azure/gpt-4o": custom})
    assert overridden.lookup("azure/gpt-4o") is custom
    assert overridden.lookup("openai/gpt-4o") == table.lookup("gpt-4o")


def test_concurrent_lookups_agree(table: PriceTable) -> None:
    names = ["gpt-4o-mini-2024-07-18", "claude-sonnet-4-5-20250929", "models/gemini-2.5-pro", "nope"] * 50
    expected = [table.lookup(n) for n in names]
    fresh = table.with_overrides({})  # a table with an empty lookup cache
    results: list[list[ModelPrice | None]] = []
    lock = threading.Lock()

    def work() -> None:
        got = [fresh.lookup(n) for n in names]
        with lock:
            results.append(got)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    assert all(got == expected for got in results)


# --- overrides ---------------------------------------------------------------------------------


def test_overrides_replace_and_add_models(table: PriceTable) -> None:
    overridden = table.with_overrides(
        {
            "gpt-4o": {"input": 2.0, "output": 8.0},
            "My-Llama": {"input": 0.2, "output": 0.2, "cached_input": 0.1, "provider": "self-hosted"},
            "claude-haiku-4-5": ModelPrice(input_per_mtok=0.5, output_per_mtok=2.5),
        }
    )
    assert overridden.cost("gpt-4o", input_tokens=MTOK, output_tokens=MTOK) == pytest.approx(10.0)
    # A mapping replaces the whole entry: the list-price cached rate does not survive.
    replaced = overridden.lookup("gpt-4o")
    assert replaced == ModelPrice(input_per_mtok=2.0, output_per_mtok=8.0)
    # Snapshots of an overridden family follow the override.
    assert overridden.lookup("gpt-4o-2024-08-06") is replaced
    assert overridden.lookup("my-llama") == ModelPrice(0.2, 0.2, 0.1, "self-hosted")
    assert "my-llama" in overridden.models()
    assert overridden.cost("claude-haiku-4-5-20251001", input_tokens=MTOK, output_tokens=0) == pytest.approx(0.5)
    assert overridden.as_of == table.as_of
    # The original table is untouched.
    assert table.cost("gpt-4o", input_tokens=MTOK, output_tokens=MTOK) == pytest.approx(12.5)
    assert table.lookup("my-llama") is None
    assert len(overridden.models()) == len(table.models()) + 1


def test_free_model_is_priced_at_zero_not_unpriced(table: PriceTable) -> None:
    overridden = table.with_overrides({"local-model": {"input": 0, "output": 0}})
    assert overridden.cost("local-model", input_tokens=500, output_tokens=500) == 0.0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"gpt-4o": {"input": "cheap", "output": 1.0}}, "pricing.gpt-4o.input"),
        ({"gpt-4o": {"input": -1.0, "output": 1.0}}, "pricing.gpt-4o.input"),
        ({"gpt-4o": {"input": True, "output": 1.0}}, "pricing.gpt-4o.input"),
        ({"gpt-4o": {"input": 1.0, "output": math.nan}}, "pricing.gpt-4o.output"),
        ({"gpt-4o": {"input": 1.0}}, "pricing.gpt-4o.output"),
        ({"gpt-4o": {"output": 1.0}}, "pricing.gpt-4o.input"),
        ({"gpt-4o": {"input": 1.0, "output": 1.0, "cached_input": 2.0}}, "pricing.gpt-4o.cached_input"),
        ({"gpt-4o": {"input": 1.0, "output": 1.0, "provider": 3}}, "pricing.gpt-4o.provider"),
        ({"gpt-4o": {"input": 1.0, "output": 1.0, "inptu": 2.0}}, "pricing.gpt-4o.inptu"),
        ({"gpt-4o": 2.5}, "pricing.gpt-4o"),
        ({"gpt-4o": {"input": 1.0, "output": 1.0}, "GPT-4O": {"input": 1.0, "output": 1.0}}, "pricing.GPT-4O"),
        ({"": {"input": 1.0, "output": 1.0}}, "pricing"),
    ],
)
def test_bad_overrides_raise_config_error_naming_the_field(
    table: PriceTable, overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        table.with_overrides(overrides)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_overrides_must_be_a_mapping(table: PriceTable) -> None:
    bad: Any = [("gpt-4o", {"input": 1.0, "output": 1.0})]
    with pytest.raises(ConfigError) as info:
        table.with_overrides(bad)
    assert info.value.field == "pricing"


# --- the shipped data --------------------------------------------------------------------------


def test_default_is_loaded_once_and_reused() -> None:
    assert PriceTable.default() is PriceTable.default()


def test_default_is_not_loaded_at_import_time() -> None:
    code = (
        "import agentwatch.instrumentation.pricing as p\n"
        "assert p._default_table.cache_info().currsize == 0\n"
        "p.PriceTable.default()\n"
        "assert p._default_table.cache_info().currsize == 1\n"
    )
    src = REPO / "instrumentation"
    result = subprocess.run(
        [sys.executable, "-c", code], env={"PYTHONPATH": str(src)}, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_shipped_file_header() -> None:
    data = _shipped_json()
    assert data["currency"] == "USD"
    assert data["unit"] == "per_million_tokens"
    assert datetime.date.fromisoformat(data["as_of"]) >= datetime.date(2025, 1, 1)
    assert "override" in data["notes"]
    assert PriceTable.default().as_of == data["as_of"]


def test_every_shipped_model_has_sane_prices() -> None:
    models: dict[str, dict[str, Any]] = _shipped_json()["models"]
    assert len(models) >= 30
    for name, entry in models.items():
        assert name == name.lower(), name
        assert set(entry) == {"provider", "input", "output", "cached_input"}, name
        assert entry["provider"] in {"openai", "anthropic", "google"}, name
        assert isinstance(entry["input"], float), name
        assert entry["input"] > 0, name
        assert isinstance(entry["output"], float), name
        assert entry["output"] > 0, name
        # Output is never cheaper than input at any of the three providers.
        assert entry["output"] >= entry["input"], name
        if entry["cached_input"] is not None:
            assert 0 < entry["cached_input"] <= entry["input"], name


def test_shipped_table_matches_the_file(table: PriceTable) -> None:
    models: dict[str, dict[str, Any]] = _shipped_json()["models"]
    assert table.models() == sorted(models)
    for name, entry in models.items():
        assert table.lookup(name) == ModelPrice(
            entry["input"], entry["output"], entry["cached_input"], entry["provider"]
        )


def test_providers_and_required_models_are_covered(table: PriceTable) -> None:
    required = {
        "openai": [
            "gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano",
            "gpt-4o", "gpt-4o-mini", "o3", "o3-mini", "o4-mini", "o1",
        ],
        "anthropic": [
            "claude-opus-4-1", "claude-opus-4", "claude-sonnet-4-5", "claude-sonnet-4",
            "claude-haiku-4-5", "claude-3-7-sonnet", "claude-3-5-haiku",
        ],
        "google": [
            "gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.0-flash", "gemini-2.0-flash-lite",
        ],
    }  # fmt: skip
    for provider, names in required.items():
        for name in names:
            price = table.lookup(name)
            assert price is not None, name
            assert price.provider == provider, name
    providers = {price.provider for name in table.models() if (price := table.lookup(name)) is not None}
    assert providers == {"openai", "anthropic", "google"}


@pytest.mark.parametrize(
    ("cheaper", "dearer"),
    [
        ("gpt-5-nano", "gpt-5-mini"),
        ("gpt-5-mini", "gpt-5"),
        ("gpt-4.1-nano", "gpt-4.1-mini"),
        ("gpt-4o-mini", "gpt-4o"),
        ("claude-haiku-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5", "claude-opus-4-1"),
        ("gemini-2.5-flash-lite", "gemini-2.5-flash"),
        ("gemini-2.5-flash", "gemini-2.5-pro"),
    ],
)
def test_smaller_tiers_are_cheaper(table: PriceTable, cheaper: str, dearer: str) -> None:
    low = table.cost(cheaper, input_tokens=MTOK, output_tokens=MTOK)
    high = table.cost(dearer, input_tokens=MTOK, output_tokens=MTOK)
    assert low is not None
    assert high is not None
    assert low < high


# --- user price files --------------------------------------------------------------------------


def test_load_price_file_yaml(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(
        "as_of: 2026-01-15\n"  # unquoted: YAML reads a date
        "currency: USD\n"
        "models:\n"
        "  gpt-4o: {input: 2, output: 8, cached_input: 1}\n"
        "  Our-Model:\n"
        "    input: 0.5\n"
        "    output: 1.5\n"
        "    provider: self-hosted\n",
        encoding="utf-8",
    )
    loaded = load_price_file(path)
    assert loaded.as_of == "2026-01-15"
    assert loaded.models() == ["gpt-4o", "our-model"]
    assert loaded.cost("gpt-4o-2024-08-06", input_tokens=MTOK, output_tokens=MTOK, cached_input_tokens=MTOK) == (
        pytest.approx(1.0 + 8.0)
    )
    assert loaded.lookup("our-model") == ModelPrice(0.5, 1.5, None, "self-hosted")
    assert loaded.lookup("claude-sonnet-4-5") is None  # a file replaces the table, it does not extend it


def test_load_price_file_json_and_yml(tmp_path: Path) -> None:
    document = {"as_of": "2026-02-01", "models": {"m1": {"input": 1.0, "output": 4.0, "cached_input": None}}}
    json_path = tmp_path / "prices.json"
    json_path.write_text(json.dumps(document), encoding="utf-8")
    yml_path = tmp_path / "prices.yml"
    yml_path.write_text(json.dumps(document), encoding="utf-8")  # JSON is valid YAML
    for path in (json_path, str(yml_path)):
        loaded = load_price_file(path)
        assert loaded.as_of == "2026-02-01"
        assert loaded.cost("m1", input_tokens=MTOK, output_tokens=MTOK) == pytest.approx(5.0)


def test_shipped_file_round_trips_through_load_price_file(tmp_path: Path, table: PriceTable) -> None:
    path = tmp_path / "copy.json"
    path.write_text(json.dumps(_shipped_json()), encoding="utf-8")
    loaded = load_price_file(path)
    assert loaded.models() == table.models()
    assert all(loaded.lookup(name) == table.lookup(name) for name in table.models())


@pytest.mark.parametrize(
    ("filename", "content", "field"),
    [
        ("p.yaml", "- just\n- a list\n", "pricing_file"),
        ("p.yaml", "models: [unclosed\n", "pricing_file"),
        ("p.json", "{not json", "pricing_file"),
        ("p.json", "{}", "models"),
        ("p.json", '{"models": {}}', "models"),
        ("p.json", '{"models": ["gpt-4o"]}', "models"),
        ("p.json", '{"currency": "EUR", "models": {"m": {"input": 1, "output": 1}}}', "currency"),
        ("p.json", '{"unit": "per_token", "models": {"m": {"input": 1, "output": 1}}}', "unit"),
        ("p.json", '{"as_of": 20250101, "models": {"m": {"input": 1, "output": 1}}}', "as_of"),
        ("p.yaml", "models:\n  m: {input: free, output: 1}\n", "models.m.input"),
        ("p.json", '{"models": {"m": {"input": NaN, "output": 1}}}', "models.m.input"),
        ("p.txt", '{"models": {"m": {"input": 1, "output": 1}}}', "pricing_file"),
    ],
)
def test_load_price_file_rejects_bad_content(tmp_path: Path, filename: str, content: str, field: str) -> None:
    path = tmp_path / filename
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_price_file(path)
    assert info.value.field == field
    assert info.value.source == str(path)
    assert str(path) in str(info.value)


def test_load_price_file_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_price_file(tmp_path / "absent.yaml")
    assert info.value.field == "pricing_file"
    assert "cannot read" in info.value.problem
