"""The geo micro-benchmark still runs (a tiny size; timings are not asserted)."""

from __future__ import annotations

import pytest

from benchmarks import geo_places


def test_geo_places_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--sessions", "3", "--slots", "4", "--places", "3", "--route-points", "300"]
    assert geo_places.main([*args, "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert "whole geo tick" in out and "convoy: steady" in out
