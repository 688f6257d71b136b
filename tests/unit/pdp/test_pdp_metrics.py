"""Prometheus text exposition (no network)."""

from __future__ import annotations

from pgwarden.pdp.metrics import Counter, Gauge, Histogram, render


def test_counter_and_gauge_render() -> None:
    c = Counter("x_total", "Things.", ("action", "code"))
    c.inc("deny", "")
    c.inc("deny", "", amount=2)
    c.inc("allow", 'we"ird')
    g = Gauge("y", "Level.")
    g.set(0.5)
    text = render([c, g])
    assert "# TYPE x_total counter" in text
    assert 'x_total{action="deny",code=""} 3' in text
    assert 'x_total{action="allow",code="we\\"ird"} 1' in text
    assert "# TYPE y gauge" in text
    assert "\ny 0.5\n" in text


def test_histogram_is_cumulative() -> None:
    h = Histogram("lat_seconds", "Latency.", buckets=(0.001, 0.01))
    for v in (0.0005, 0.005, 0.005, 5.0):
        h.observe(v)
    text = render([h])
    assert 'lat_seconds_bucket{le="0.001"} 1' in text
    assert 'lat_seconds_bucket{le="0.01"} 3' in text
    assert 'lat_seconds_bucket{le="+Inf"} 4' in text
    assert "lat_seconds_count 4" in text
    assert h.count() == 4
