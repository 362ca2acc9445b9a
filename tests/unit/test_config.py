"""Every risk limit and trigger is configurable, and a wrong key is named."""

import os
from pathlib import Path

import pytest

from engine.config import ConfigError, LimitsOverride, RiskConfig, TriggersConfig, load_settings
from engine.session import risk_limits, trigger_limits
from risk.checks import LIMIT_FIELDS
from risk.triggers import TriggerLimits


def test_every_pre_trade_limit_is_a_config_key_and_an_override_key() -> None:
    assert set(RiskConfig.model_fields) - {"per_strategy", "per_symbol"} == LIMIT_FIELDS
    assert set(LimitsOverride.model_fields) == LIMIT_FIELDS


def test_every_trigger_is_a_config_key() -> None:
    assert set(TriggersConfig.model_fields) == set(TriggerLimits.__dataclass_fields__)


def test_toml_sets_limits_overrides_and_triggers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(os.environ):
        if k.startswith("TRADECTL_"):
            monkeypatch.delenv(k)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[risk]\nmax_orders_per_s = 20\nprice_collar_ticks = 8\n"
        "[risk.per_symbol.tsla]\nmax_order_qty = 100\n"
        "[triggers]\ndaily_loss = 25000\ndisconnect_timeout_s = 10\n"
    )
    s = load_settings(cfg)
    limits = risk_limits(s)
    assert limits.default.max_orders_per_s == 20 and limits.default.price_collar_ticks == 8
    assert limits.for_order("any", "TSLA").max_order_qty == 100
    t = trigger_limits(s)
    assert t.daily_loss == 25000 and t.disconnect_timeout_s == 10


def test_a_misspelt_trigger_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[triggers]\ndaily_los = 1\n")
    with pytest.raises(ConfigError, match=r"triggers\.daily_los"):
        load_settings(cfg)
