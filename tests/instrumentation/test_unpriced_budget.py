"""A ``max_usd`` budget cannot be silently unenforced by a model without a price."""

from __future__ import annotations

import logging
import uuid

import pytest
from _telemetry import Telemetry, attrs

from agentwatch.instrumentation import Budget, BudgetExceeded, ConfigError, StopReason, load_config, semconv

WARNING_LOGGER = "agentwatch.instrumentation"


def _model() -> str:
    """A fresh unpriced model name: the warning is once per model and process."""
    return f"my-finetune-{uuid.uuid4().hex[:8]}"


def _budget_events(telemetry: Telemetry) -> list[dict[str, object]]:
    run_span = telemetry.run_span()
    return [dict(e.attributes or {}) for e in run_span.events if e.name == semconv.EVENT_BUDGET_EXHAUSTED]


def _unpriced_warnings(caplog: pytest.LogCaptureFixture, model: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == WARNING_LOGGER and model in r.getMessage() and "no price" in r.getMessage()
    ]


def test_unpriced_model_stops_a_max_usd_run_before_the_call(telemetry: Telemetry) -> None:
    model = _model()
    with telemetry.run(budget=Budget(max_usd=1.0)) as run:
        with run.step():
            run.record_llm_call(model="gpt-4o", input_tokens=100, output_tokens=10)
        with run.step():
            run.record_llm_call(model=model, input_tokens=100, output_tokens=10)
        pytest.fail("the unpriced call must stop the run")
    assert run.stop_reason is StopReason.MAX_USD
    assert run.exhausted_budget is not None
    assert run.exhausted_budget.value == "usd"
    assert run.llm_calls == 1  # the unpriced call never started
    assert [span.attributes[semconv.GEN_AI_REQUEST_MODEL] for span in telemetry.llm()] == ["gpt-4o"]  # type: ignore[index]
    run_attrs = attrs(telemetry.run_span())
    assert run_attrs[semconv.STOP_REASON] == "max_usd"
    assert run_attrs[semconv.BUDGET_EXHAUSTED] == "usd"
    events = _budget_events(telemetry)
    assert len(events) == 1
    assert events[0][semconv.EVENT_ATTR_BUDGET] == "usd"
    assert events[0][semconv.EVENT_ATTR_REASON] == semconv.BUDGET_REASON_UNPRICED_MODEL == "unpriced_model"
    assert events[0][semconv.EVENT_ATTR_MODEL] == model
    assert events[0][semconv.EVENT_ATTR_LIMIT] == 1.0


def test_the_context_manager_form_is_refused_too(telemetry: Telemetry) -> None:
    model = _model()
    with telemetry.run(budget=Budget(max_usd=1.0)) as run:
        with pytest.raises(BudgetExceeded) as raised:
            run.llm_call(model=model)
        assert raised.value.reason == "unpriced_model"
        assert raised.value.model == model
        assert "has no price" in str(raised.value)
        with pytest.raises(BudgetExceeded):  # terminal: nothing starts after it
            run.record_llm_call(model="gpt-4o", input_tokens=1, output_tokens=1)
    assert run.stop_reason is StopReason.MAX_USD
    assert telemetry.llm() == []


def test_priced_model_runs_normally(telemetry: Telemetry) -> None:
    with telemetry.run(budget=Budget(max_usd=1.0)) as run:
        for _ in range(3):
            with run.step():
                run.record_llm_call(model="gpt-4o-mini-2024-07-18", input_tokens=1000, output_tokens=100)
    assert run.stop_reason is StopReason.COMPLETED
    assert run.llm_calls == 3
    assert run.unpriced_llm_calls == 0
    assert _budget_events(telemetry) == []
    assert semconv.RUN_COST_UNPRICED not in attrs(telemetry.run_span())


def test_model_priced_in_the_settings_price_table_runs(telemetry: Telemetry) -> None:
    model = _model()
    priced = telemetry.with_settings(
        price_table=telemetry.settings.prices().with_overrides({model: {"input": 1.0, "output": 2.0}})
    )
    with priced.run(budget=Budget(max_usd=1.0)) as run:
        run.record_llm_call(model=model, input_tokens=1_000_000, output_tokens=0)
    assert run.stop_reason is StopReason.COMPLETED
    assert run.cost_usd == pytest.approx(1.0)


def test_explicit_billed_cost_counts_as_priced(telemetry: Telemetry) -> None:
    with telemetry.run(budget=Budget(max_usd=1.0)) as run:
        run.record_llm_call(model=_model(), input_tokens=10, output_tokens=10, cost_usd=0.25)
    assert run.stop_reason is StopReason.COMPLETED
    assert run.cost_usd == pytest.approx(0.25)
    assert run.unpriced_llm_calls == 0


@pytest.mark.parametrize("allow", ["all", "named", "pattern"])
def test_allow_option_lets_it_run_and_marks_cost_unpriced(telemetry: Telemetry, allow: str) -> None:
    model = _model()
    budget = {
        "all": Budget(max_usd=1.0, allow_unpriced=True),
        "named": Budget(max_usd=1.0, allow_unpriced_models=[model.upper()]),
        "pattern": Budget(max_usd=1.0, allow_unpriced_models=["my-finetune-*"]),
    }[allow]
    with telemetry.run(budget=budget) as run:
        with run.step():
            run.record_llm_call(model=model, input_tokens=100, output_tokens=10)
        with run.step():
            run.record_llm_call(model="gpt-4o", input_tokens=1000, output_tokens=0)
    assert run.stop_reason is StopReason.COMPLETED
    assert run.unpriced_llm_calls == 1
    assert _budget_events(telemetry) == []
    unpriced_span = next(s for s in telemetry.llm() if s.attributes[semconv.GEN_AI_REQUEST_MODEL] == model)  # type: ignore[index]
    assert attrs(unpriced_span)[semconv.COST_UNPRICED] is True
    assert semconv.COST_USD not in attrs(unpriced_span)
    run_attrs = attrs(telemetry.run_span())
    assert run_attrs[semconv.RUN_COST_UNPRICED] is True
    assert run_attrs[semconv.RUN_UNPRICED_LLM_CALLS] == 1
    assert run_attrs[semconv.RUN_COST_USD] == pytest.approx(0.0025)  # a lower bound: the priced part


def test_allow_list_does_not_cover_other_models(telemetry: Telemetry) -> None:
    with telemetry.run(budget=Budget(max_usd=1.0, allow_unpriced_models=["some-other-model"])) as run:
        run.record_llm_call(model=_model(), input_tokens=1, output_tokens=1)
    assert run.stop_reason is StopReason.MAX_USD


def test_without_max_usd_an_unpriced_model_only_marks_the_cost(telemetry: Telemetry) -> None:
    with telemetry.run(budget=Budget(max_steps=5)) as run:
        run.record_llm_call(model=_model(), input_tokens=1, output_tokens=1)
    assert run.stop_reason is StopReason.COMPLETED
    assert attrs(telemetry.run_span())[semconv.RUN_COST_UNPRICED] is True


def test_unpriced_call_admitted_before_its_model_was_known_still_ends_the_run(telemetry: Telemetry) -> None:
    # A runtime integration admits the call, then records it under a model the table does not know.
    from agentwatch.instrumentation._llm import LLMCall

    model = _model()
    with telemetry.run(budget=Budget(max_usd=1.0)) as run:
        run._admit_llm_call()
        call = LLMCall(run, model=model, provider=None, operation=semconv.OP_CHAT, input_messages=None)
        call.start()
        call.set_usage(input_tokens=5, output_tokens=5)
        call.finish()
        assert run.stopped
        with pytest.raises(BudgetExceeded):
            run.record_llm_call(model="gpt-4o", input_tokens=1, output_tokens=1)
    assert run.stop_reason is StopReason.MAX_USD
    assert run.llm_calls == 1  # the call happened, so it counts
    events = _budget_events(telemetry)
    assert [e[semconv.EVENT_ATTR_REASON] for e in events] == ["unpriced_model"]


def test_warning_is_logged_once_per_model(telemetry: Telemetry, caplog: pytest.LogCaptureFixture) -> None:
    model = _model()
    caplog.set_level(logging.WARNING, logger=WARNING_LOGGER)
    for _ in range(3):
        with telemetry.run(budget=Budget(max_usd=1.0)) as run:
            run.record_llm_call(model=model, input_tokens=1, output_tokens=1)
        assert run.stop_reason is StopReason.MAX_USD
    with telemetry.run(budget=Budget(max_usd=1.0, allow_unpriced=True)) as run:
        run.record_llm_call(model=model, input_tokens=1, output_tokens=1)
    with telemetry.run() as run:
        run.record_llm_call(model=model, input_tokens=1, output_tokens=1)
    assert len(_unpriced_warnings(caplog, model)) == 1
    other = _model()
    with telemetry.run() as run:
        run.record_llm_call(model=other, input_tokens=1, output_tokens=1)
    assert len(_unpriced_warnings(caplog, other)) == 1


def test_budget_validates_the_allow_options() -> None:
    with pytest.raises(ConfigError, match="allow_unpriced"):
        Budget(max_usd=1.0, allow_unpriced="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="allow_unpriced_models"):
        Budget(max_usd=1.0, allow_unpriced_models="my-model")
    with pytest.raises(ConfigError, match="allow_unpriced_models"):
        Budget(max_usd=1.0, allow_unpriced_models=[""])
    assert Budget(allow_unpriced_models=[" A ", "a"]).allow_unpriced_models == ("a",)


def test_config_budgets_allow_unpriced_models() -> None:
    config = load_config({"budgets": {"max_usd": 0.5, "allow_unpriced_models": ["my-ft"], "allow_unpriced": False}})
    assert config.budget.allow_unpriced_models == ("my-ft",)
    assert config.budget.allows_unpriced("MY-FT")
    assert not config.budget.allows_unpriced("other")
    with pytest.raises(ConfigError, match=r"budgets\.allow_unpriced_models"):
        load_config({"budgets": {"allow_unpriced_models": "my-ft"}})
