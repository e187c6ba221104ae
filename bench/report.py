"""Medians (with min and max) over runs, the table, and the targets checked against it."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

Getter = Callable[[dict[str, Any]], Any]


def _path(*keys: str) -> Getter:
    def get(run: dict[str, Any]) -> Any:
        value: Any = run
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value

    return get


def metrics(sizes: list[str]) -> list[tuple[str, str, Getter]]:
    """(key, label, getter) for every figure of one server run."""
    rows: list[tuple[str, str, Getter]] = []
    for n in sizes:
        rows += [
            (
                f"{n}.fixed.cpu_us",
                f"N={n}: server CPU µs/delivery at 20 broadcasts/s",
                _path(n, "fixed", "cpu_us"),
            ),
            (
                f"{n}.flood.cpu_us",
                f"N={n}: server CPU µs/delivery at flood",
                _path(n, "flood", "cpu_us"),
            ),
            (f"{n}.flood.rate", f"N={n}: deliveries/s at flood", _path(n, "flood", "rate")),
            (f"{n}.fixed.p50_ms", f"N={n}: latency p50 ms at 20/s", _path(n, "fixed", "p50_ms")),
            (f"{n}.fixed.p99_ms", f"N={n}: latency p99 ms at 20/s", _path(n, "fixed", "p99_ms")),
            *_server_delays(n, "fixed", "at 20/s"),
            (f"{n}.flood.p50_ms", f"N={n}: latency p50 ms at flood", _path(n, "flood", "p50_ms")),
            (f"{n}.flood.p99_ms", f"N={n}: latency p99 ms at flood", _path(n, "flood", "p99_ms")),
            *_server_delays(n, "flood", "at flood"),
            (f"{n}.paced.rate", f"N={n}: deliveries/s, paced", _path(n, "paced", "rate")),
            (f"{n}.paced.p50_ms", f"N={n}: latency p50 ms, paced", _path(n, "paced", "p50_ms")),
            (f"{n}.paced.p99_ms", f"N={n}: latency p99 ms, paced", _path(n, "paced", "p99_ms")),
            *_server_delays(n, "paced", "paced"),
            (
                f"{n}.fixed.lag_max_ms",
                f"N={n}: max loop lag ms at 20/s",
                _path(n, "fixed", "lag_max_ms"),
            ),
            (f"{n}.mem_kib", f"N={n}: idle memory KiB/connection (RSS)", _path(n, "mem_kib")),
            (f"{n}.connect_per_s", f"N={n}: connect+JWT+subscribe /s", _path(n, "connect_per_s")),
            (
                f"{n}.connect_cpu_us",
                f"N={n}: server CPU µs per connect+JWT+subscribe",
                _path(n, "connect_cpu_us"),
            ),
        ]
    rows += [
        (
            "burst.unbatched.cpu_us",
            "bursts of 10: CPU µs/delivery, unbatched",
            _path("burst", "unbatched", "cpu_us"),
        ),
        (
            "burst.batched.cpu_us",
            "bursts of 10: CPU µs/delivery, batched",
            _path("burst", "batched", "cpu_us"),
        ),
        (
            "burst.batched.frames_per_delivery",
            "bursts of 10: frames/delivery, batched",
            lambda r: _ratio(
                _path("burst", "batched", "frames")(r), _path("burst", "batched", "received")(r)
            ),
        ),
    ]
    return rows


def _server_delays(n: str, run: str, when: str) -> list[tuple[str, str, Getter]]:
    """The server's own share of the latency: publish to transport write (``bench.delays``)."""
    return [
        (
            f"{n}.{run}.server_{q}_ms",
            f"N={n}: server publish-to-write {q} ms {when}",
            _path(n, run, f"server_{q}_ms"),
        )
        for q in ("p50", "p99")
    ]


def big_metrics() -> list[tuple[str, str, Getter]]:
    return [
        ("big.fixed.cpu_us", "server CPU µs/delivery", _path("fixed", "cpu_us")),
        ("big.fixed.p50_ms", "latency p50 ms", _path("fixed", "p50_ms")),
        ("big.fixed.p99_ms", "latency p99 ms", _path("fixed", "p99_ms")),
        ("big.fixed.lag_max_ms", "max loop lag ms", _path("fixed", "lag_max_ms")),
        ("big.fixed.gc_max_ms", "longest garbage collection ms", _path("fixed", "gc_max_ms")),
        ("big.mem_kib", "idle memory KiB/connection", _path("mem_kib")),
        ("big.connect_per_s", "connect (+JWT+subscribe) /s", _path("connect_per_s")),
        ("big.connect_cpu_us", "server CPU µs per connect", _path("connect_cpu_us")),
    ]


_HUGE: tuple[tuple[str, str], ...] = (
    ("mem_kib", "idle memory KiB/connection (RSS)"),
    ("connect_s", "time to connect all (+JWT+subscribe), s"),
    ("connect_per_s", "connect+JWT+subscribe /s"),
    ("connect_cpu_us", "server CPU µs per connect"),
    ("single.lag_max_ms", "one broadcast to all: max loop lag ms"),
    ("single.last_ms", "one broadcast to all: publish to last delivery ms"),
    ("single.p50_ms", "one broadcast to all: latency p50 ms"),
    ("single.p99_ms", "one broadcast to all: latency p99 ms"),
    ("single.server_p99_ms", "one broadcast to all: server publish-to-write p99 ms"),
    ("single.cpu_us", "one broadcast to all: CPU µs/delivery"),
    ("flood.rate", "flood: deliveries/s"),
    ("flood.last_ms", "flood: first publish to last delivery ms"),
    ("flood.p99_ms", "flood: latency p99 ms"),
    ("flood.publish_busy_ms", "flood: ms the publisher spent in broadcast() (waiting)"),
    ("flood.lag_max_ms", "flood: max loop lag ms"),
    ("flood.received", "flood: deliveries received"),
    ("flood.expected", "flood: deliveries expected"),
    ("flood.dropped", "flood: frames dropped by the overflow policy"),
    ("flood.closed_too_slow", "flood: connections closed as too slow (1013)"),
)


def huge_metrics() -> list[tuple[str, str, Getter]]:
    """The huge plan's figures (``bench.huge``)."""
    return [(f"huge.{key}", label, _path(*key.split("."))) for key, label in _HUGE]


def _ratio(a: Any, b: Any) -> float | None:
    return a / b if a is not None and b else None


def _stat(values: list[Any]) -> dict[str, float] | None:
    present = [float(v) for v in values if v is not None]
    if not present:
        return None
    return {
        "median": statistics.median(present),
        "min": min(present),
        "max": max(present),
        "n": len(present),
    }


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    sizes = [str(s) for s in report["settings"]["sizes"]]
    rows = metrics(sizes)
    summary: dict[str, Any] = {"servers": {}, "big": {}, "ceiling": {}}
    for name, runs in report["raw"]["runs"].items():
        summary["servers"][name] = {key: _stat([get(r) for r in runs]) for key, _, get in rows}
    for name, runs in report["raw"]["big"].items():
        summary["big"][name] = {key: _stat([get(r) for r in runs]) for key, _, get in big_metrics()}
    huge = report["raw"].get("huge", [])
    summary["huge"] = {key: _stat([get(r) for r in huge]) for key, _, get in huge_metrics()}
    summary["huge_group"] = {"huge": summary["huge"]}
    ceiling = report["raw"]["ceiling"]
    summary["ceiling"] = {key: _stat([get(r) for r in ceiling]) for key, _, get in rows}
    summary["targets"] = targets(summary, sizes[0] if sizes else "500")
    return summary


def _median(summary: dict[str, Any], server: str, key: str, group: str = "servers") -> float | None:
    stat = summary[group].get(server, {}).get(key)
    return stat["median"] if stat else None


def targets(summary: dict[str, Any], n: str) -> list[dict[str, Any]]:
    """Each target of the issue: the figures it compares, the ratio, and whether it holds."""
    m = lambda server, key, group="servers": _median(summary, server, key, group)  # noqa: E731
    checks: list[tuple[str, float | None, str, float]] = []

    def ratio(name: str, a: float | None, b: float | None, op: str, bound: float) -> None:
        checks.append((name, a / b if a is not None and b else None, op, bound))

    ch, hw, sio = "channels", "handwritten", "socketio"
    ratio(
        "CPU/delivery at 20/s vs hand-written",
        m(ch, f"{n}.fixed.cpu_us"),
        m(hw, f"{n}.fixed.cpu_us"),
        "<=",
        0.8,
    )
    ratio(
        "CPU/delivery at 20/s vs python-socketio",
        m(ch, f"{n}.fixed.cpu_us"),
        m(sio, f"{n}.fixed.cpu_us"),
        "<=",
        0.25,
    )
    ratio(
        "flood deliveries/s vs hand-written",
        m(ch, f"{n}.flood.rate"),
        m(hw, f"{n}.flood.rate"),
        ">=",
        1.2,
    )
    p99c, p99h = m(ch, f"{n}.fixed.p99_ms"), m(hw, f"{n}.fixed.p99_ms")
    checks.append(
        (
            "p99 at 20/s minus hand-written's (ms)",
            p99c - p99h if p99c is not None and p99h is not None else None,
            "<=",
            0.0,
        )
    )
    ratio(
        "N=2000: flood deliveries/s vs hand-written",
        m(ch, "2000.flood.rate"),
        m(hw, "2000.flood.rate"),
        ">=",
        1.2,
    )
    for size in ("500", "2000"):
        for phase, label in (("flood", "at flood"), ("paced", "paced (same deliveries/s for all)")):
            p99c, p99h = m(ch, f"{size}.{phase}.p99_ms"), m(hw, f"{size}.{phase}.p99_ms")
            checks.append(
                (
                    f"N={size}: p99 {label} minus hand-written's (ms)",
                    p99c - p99h if p99c is not None and p99h is not None else None,
                    "<=",
                    0.0,
                )
            )
    p99c = m(ch, f"{n}.fixed.p99_ms")
    ratio(
        "idle memory/connection vs hand-written",
        m(ch, f"{n}.mem_kib"),
        m(hw, f"{n}.mem_kib"),
        "<=",
        1.15,
    )
    ratio(
        "connect+JWT+subscribe vs hand-written plain connect",
        m(ch, f"{n}.connect_per_s"),
        m(hw, f"{n}.connect_per_s"),
        ">=",
        0.9,
    )
    checks.append(
        (
            "max loop lag at 10,000 subscribers (ms)",
            m(ch, "big.fixed.lag_max_ms", "big"),
            "<=",
            50.0,
        )
    )
    checks.append(
        (
            "huge plan: max loop lag during one broadcast to all (ms)",
            m("huge", "huge.single.lag_max_ms", "huge_group"),
            "<=",
            50.0,
        )
    )
    ratio(
        "batched vs unbatched CPU/delivery (bursts of 10)",
        m(ch, "burst.batched.cpu_us"),
        m(ch, "burst.unbatched.cpu_us"),
        "<=",
        0.2,
    )
    rp99 = m("channels-redis", f"{n}.fixed.p99_ms")
    checks.append(
        (
            "Redis p99 minus in-process p99 (ms)",
            rp99 - p99c if rp99 is not None and p99c is not None else None,
            "<=",
            5.0,
        )
    )
    out = []
    for name, value, op, bound in checks:
        holds = None if value is None else (value <= bound if op == "<=" else value >= bound)
        out.append({"target": name, "value": value, "op": op, "bound": bound, "holds": holds})
    return out


def _cell(stat: dict[str, float] | None) -> str:
    if stat is None:
        return "-"
    fmt = (lambda v: f"{v:,.0f}") if stat["median"] >= 100 else (lambda v: f"{v:.2f}")
    if stat["n"] == 1:
        return fmt(stat["median"])
    return f"{fmt(stat['median'])} ({fmt(stat['min'])}-{fmt(stat['max'])})"


def render(report: dict[str, Any]) -> str:
    """Markdown tables of medians (min-max), the phases cut short, and the targets.

    With the other Python choices in the run (``settings.peers``), they get a table of their
    own, beside fastapi_channels' columns (in-process and Redis) repeated for reference.
    """
    summary = report["summary"]
    sizes = [str(s) for s in report["settings"]["sizes"]]
    names = list(summary["servers"])
    peers = [n for n in names if n in report["settings"].get("peers", ())]
    lines: list[str] = []
    if sizes:  # the ``big`` plan has only the 10,000-connection table
        first = [n for n in names if n not in peers]
        if first or not peers:
            lines += _table(summary, sizes, first, first, ceiling=True)
        if peers:
            reference = [n for n in ("channels", "channels-redis") if n in first]
            lines += ["", *_table(summary, sizes, reference + peers, peers, ceiling=False)]
        lines += _cut_short(report)
    if summary["big"]:
        big = list(summary["big"])
        size = report["settings"]["big"]
        lines += [
            "",
            f"| N={size:,} on one process | {' | '.join(big)} |",
            "|---|" + "---|" * len(big),
        ]
        for key, label, _ in big_metrics():
            lines.append(
                f"| {label} | {' | '.join(_cell(summary['big'][n].get(key)) for n in big)} |"
            )
    huge = summary.get("huge", {})
    if any(huge.values()):
        lines += ["", "| huge plan: one process, light clients | channels |", "|---|---|"]
        for key, label, _ in huge_metrics():
            lines.append(f"| {label} | {_cell(huge.get(key))} |")
    lines += ["", "| target | value | bound | holds |", "|---|---|---|---|"]
    for t in summary["targets"]:
        value = "-" if t["value"] is None else f"{t['value']:.2f}"
        holds = {True: "yes", False: "**no**", None: "not measured"}[t["holds"]]
        lines.append(f"| {t['target']} | {value} | {t['op']} {t['bound']} | {holds} |")
    for name, why in report["pending"].items():
        lines.append(f"\n{name}: pending ({why})")
    return "\n".join(lines).lstrip("\n")


def _table(
    summary: dict[str, Any], sizes: list[str], names: list[str], own: list[str], ceiling: bool
) -> list[str]:
    """One table; a row is left out when none of the ``own`` columns has its figure."""
    columns = [*names, "load client ceiling"] if ceiling else names
    lines = [f"| figure | {' | '.join(columns)} |", "|---|" + "---|" * len(columns)]
    for key, label, _ in metrics(sizes):
        if all(summary["servers"][n].get(key) is None for n in own):
            continue
        cells = [_cell(summary["servers"][n].get(key)) for n in names]
        if ceiling:
            cells.append(_cell(summary["ceiling"].get(key)))
        lines.append(f"| {label} | {' | '.join(cells)} |")
    return lines


def _cut_short(report: dict[str, Any]) -> list[str]:
    """A line for every phase whose deliveries did not all arrive within its time limit."""
    lines = []
    for name, runs in report["raw"]["runs"].items():
        for number, run in enumerate(runs, 1):
            for size in report["settings"]["sizes"]:
                for phase in ("fixed", "flood", "paced"):
                    figures = _path(str(size), phase)(run)
                    if figures and figures["received"] < figures["expected"]:
                        lines.append(
                            f"- {name}, run {number}, N={size}, {phase}: "
                            f"{figures['received']:,} of {figures['expected']:,} deliveries "
                            "arrived within the time limit"
                        )
    return ["", "Cut short (figures over what arrived):", *lines] if lines else []
