"""Maintenance windows (risk/windows.py): when a broker disconnect is expected, and what the disconnect
trigger and the connectivity check do inside one."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from engine.config import ConfigError, load_settings
from engine.domain import Instrument, KillState, OrderIntent, RejectCode, Side
from risk.checks import CheckContext, Limits, check_connectivity
from risk.triggers import TriggerLimits, TripWires
from risk.windows import Maintenance, MaintenanceWindow

NY = ZoneInfo("America/New_York")


def ny(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=NY)


def test_ibs_daily_reset_covers_00_15_to_01_45_new_york_sunday_to_friday() -> None:
    m = load_settings().maintenance.schedule()
    inside = m.covering(ny(2026, 11, 24, 1, 0))  # a Tuesday
    assert inside is not None and inside[0].name == "ib-daily-reset" and inside[1] == ny(2026, 11, 24, 1, 45)
    assert m.covering(ny(2026, 11, 24, 1, 45)) is None and m.covering(ny(2026, 11, 24, 0, 14)) is None


def test_the_weekend_maintenance_runs_from_friday_23_00_into_saturday() -> None:
    m = load_settings().maintenance.schedule()
    inside = m.covering(ny(2026, 11, 28, 2, 30))  # Saturday, begun the day before
    assert inside is not None and inside[0].name == "ib-weekend-maintenance"
    assert inside[1] == ny(2026, 11, 28, 3, 0)
    assert m.covering(ny(2026, 11, 28, 3, 0)) is None


def test_a_window_stays_at_its_local_time_across_a_daylight_saving_change() -> None:
    window = MaintenanceWindow("gw", time(23, 55), 10, NY)
    summer, winter = window.covering(ny(2026, 10, 30, 23, 58)), window.covering(ny(2026, 11, 2, 23, 58))
    assert summer is not None and winter is not None
    assert summer[0].utcoffset() != winter[0].utcoffset()  # 03:55 UTC, then 04:55 UTC
    assert (summer[0].hour, summer[0].minute) == (winter[0].hour, winter[0].minute) == (23, 55)


def test_a_window_runs_only_on_its_days() -> None:
    window = MaintenanceWindow("weekdays", time(12, 0), 30, NY, frozenset({0, 1, 2, 3, 4}))
    assert window.covering(ny(2026, 11, 27, 12, 10)) is not None  # Friday
    assert window.covering(ny(2026, 11, 28, 12, 10)) is None  # Saturday


def test_overlapping_windows_answer_the_one_that_ends_last() -> None:
    m = Maintenance((MaintenanceWindow("short", time(0, 0), 30, UTC), MaintenanceWindow("long", time(0, 10), 60, UTC)))
    found = m.covering(datetime(2026, 11, 27, 0, 20, tzinfo=UTC))
    assert found is not None and found[0].name == "long"


def wires(timeout: float = 30.0, start: time = time(0, 0), minutes: float = 60) -> TripWires:
    return TripWires(TriggerLimits(disconnect_timeout_s=timeout),
                     maintenance=Maintenance((MaintenanceWindow("reset", start, minutes, UTC),)))


T_IN = datetime(2026, 11, 27, 0, 10, tzinfo=UTC)


def test_a_disconnect_that_begins_in_a_window_does_not_trip_before_the_window_ends() -> None:
    trips = wires()
    trips.on_connection(T_IN, connected=False)
    assert trips.check_disconnect(T_IN + timedelta(minutes=49)) is None  # 00:59, past the 30 s timeout


def test_a_disconnect_that_outlives_its_window_trips_after_the_timeout_naming_the_window() -> None:
    trips = wires()
    trips.on_connection(T_IN, connected=False)
    assert trips.check_disconnect(datetime(2026, 11, 27, 1, 0, 29, tzinfo=UTC)) is None
    trip = trips.check_disconnect(datetime(2026, 11, 27, 1, 0, 30, tzinfo=UTC))
    assert trip is not None and trip.state is KillState.HALTED and "maintenance window reset" in trip.reason


def test_a_disconnect_that_begins_outside_a_window_trips_after_the_timeout_as_before() -> None:
    trips = wires()
    down = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
    trips.on_connection(down, connected=False)
    assert trips.check_disconnect(down + timedelta(seconds=29)) is None
    assert trips.check_disconnect(down + timedelta(seconds=30)) is not None


def test_the_connectivity_check_names_the_window_while_the_link_is_down_in_one() -> None:
    intent = OrderIntent("tc-s1", "s1", "s", Instrument("AAPL"), Side.BUY, Decimal(1))
    ctx = CheckContext(T_IN, None, Decimal(0), Decimal(0), Limits(), broker_connected=False, expected_outage="reset")
    rejected = check_connectivity(intent, ctx)
    assert rejected is not None and rejected.code is RejectCode.MAINTENANCE_WINDOW and "reset" in rejected.detail
    down = CheckContext(T_IN, None, Decimal(0), Decimal(0), Limits(), broker_connected=False)
    plain = check_connectivity(intent, down)
    assert plain is not None and plain.code is RejectCode.BROKER_DISCONNECTED


def test_a_malformed_window_is_refused_naming_its_key() -> None:
    with pytest.raises(ConfigError, match=r"maintenance\.windows\.0\.timezone"):
        load_settings(maintenance={"windows": [{"name": "gw", "start": "23:55", "minutes": 10,
                                                "timezone": "Mars/Olympus"}]})
