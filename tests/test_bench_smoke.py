"""A tiny run of the benchmark: a few connections per server, sane numbers from the driver."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from bench import run

SIZE = str(run.PLANS["smoke"].sizes[0])


def smoke(tmp_path: Path, servers: list[str]) -> dict[str, Any]:
    out = tmp_path / "smoke.json"
    argv = ["--plan", "smoke", "--quiet", "--servers", ",".join(servers), "--out", str(out)]
    report = run.main(argv)
    assert out.exists()
    ceiling = report["raw"]["ceiling"][0][SIZE]
    assert ceiling["flood"]["received"] == ceiling["flood"]["expected"]
    for name in servers:
        result = report["raw"]["runs"][name][0][SIZE]
        for phase in ("fixed", "flood"):
            figures = result[phase]
            assert figures["received"] == figures["expected"] > 0, (name, phase, figures)
            assert figures["publish_error"] is None
            assert 0 < figures["cpu_us"] < 10_000, (name, phase, figures)
        assert 0 < result["fixed"]["p50_ms"] <= result["fixed"]["p99_ms"] < 1000
        assert result["flood"]["rate"] > 0
        assert result["connect_per_s"] > 0
        assert result["mem_kib"] < 1024
    assert all(name in run.render(report) for name in servers)
    return report


def test_fastapi_channels_and_the_hand_written_endpoints(tmp_path: Path) -> None:
    servers = ["channels", "handwritten", "handwritten-jwt"]
    if run.redis_available() is None:
        servers.append("channels-redis")
    report = smoke(tmp_path, servers)
    burst = report["raw"]["runs"]["channels"][0]["burst"]
    assert burst["batched"]["received"] == burst["batched"]["expected"]
    assert burst["batched"]["frames"] < burst["unbatched"]["frames"]  # fewer, bigger frames


@pytest.mark.skipif(
    importlib.util.find_spec("socketio") is None,
    reason="python-socketio is not installed (pip install -e '.[bench]')",
)
def test_python_socketio(tmp_path: Path) -> None:
    smoke(tmp_path, ["socketio"])


@pytest.mark.skipif(
    any(run.unavailable(name) for name in run.PEERS),
    reason="the other Python choices are not installed (pip install -e '.[bench]')",
)
def test_django_channels_broadcaster_and_litestar(tmp_path: Path) -> None:
    servers = list(run.PEERS)
    if run.redis_available() is None:  # two workers each, sharing the Redis server
        servers += run.PEERS_REDIS
    report = smoke(tmp_path, servers)
    assert "| figure | django | broadcaster | litestar" in run.render(report)


def test_the_redis_cluster_capacity_benchmark() -> None:
    import shutil

    from bench import redis_cluster
    from tests.redis_support import redis_unavailable

    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        redis_unavailable("no redis-server and redis-cli binaries on PATH for a Redis Cluster")
    options = {"duration": 0.5, "processes": 1, "concurrency": 4, "channels": 16}
    result = redis_cluster.measure(1, options)
    assert result.published > 0 and result.spublish > 0
    assert result.received == result.published  # every publish reached the receiver


def test_capacity_per_engine(tmp_path: Path, nats_url: str) -> None:
    from bench import capacity

    out = tmp_path / "capacity.json"
    engines = "memory" if run.redis_available() else "memory,redis"
    argv = ["--engines", engines, "--broker", nats_url, "--quiet", "--out", str(out)]
    argv += ["--subscribers", "5", "--publishers", "1", "--warmup", "0.2", "--duration", "0.3"]
    report = capacity.main(argv)
    assert out.exists() and report["skipped"] == {}
    results = report["results"]
    assert [r["engine"] for r in results] == [*engines.split(","), "nats"]
    for result in results:
        assert result["broadcasts_per_s"] > 0, result
        assert result["deliveries_per_s"] == pytest.approx(5 * result["broadcasts_per_s"], 0.05)
        assert 0 < result["cpu_us_per_delivery"] < 10_000, result
    assert "deliveries/s" in capacity.render([capacity.Result(**results[0])], {})
