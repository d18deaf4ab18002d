"""The benchmark's compact table (the full numbers are in bench/results/latest.json)."""

from __future__ import annotations

from typing import Any

COLUMNS = (
    "scenario",
    "server",
    "req/s",
    "p50 ms",
    "p99 ms",
    "non-2xx",
    "RSS MiB",
    "redis cmd/req",
    "reads/req",
)
WIDTHS = (14, 10, 9, 8, 8, 8, 8, 14, 10)


def _row(cells: tuple[str, ...]) -> str:
    return "  ".join(
        c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, WIDTHS, strict=True))
    ).rstrip()


def _server_row(label: str, who: str, data: dict[str, Any], redis: dict[str, Any] | None) -> str:
    errors = data["non_2xx"] + data["socket_errors"]
    return _row(
        (
            label,
            who,
            f"{data['requests_per_s']:,.0f}",
            f"{data['p50_ms']:.2f}",
            f"{data['p99_ms']:.2f}",
            str(errors),
            f"{data['peak_rss_mib']:.1f}",
            f"{redis['commands_per_request']:.2f}" if redis else "-",
            f"{redis['reads_per_request']:.3f}" if redis else "-",
        )
    )


def print_table(result: dict[str, Any]) -> None:
    settings, versions, machine = result["settings"], result["versions"], result["machine"]
    print(
        f"\ngateway benchmark {result['date']}: {machine['cpus']} CPUs ({machine['cpu_model']}), "
        f"load {versions['load_generator']}, upstream {versions['upstream']}, "
        f"{settings['rounds']} rounds x {settings['duration_s']:g} s, "
        f"{settings['connections']} connections, {settings['body_bytes']} B body\n"
    )
    print(_row(COLUMNS))
    print(_row(tuple("-" * w for w in WIDTHS)))
    for name, s in result["scenarios"].items():
        print(_server_row(name, "reference", s["reference"], None))
        print(_server_row("", "gateway", s["gateway"], s["redis"]))
        verdict = s["result"]
        ratios = ", ".join(f"{r:.3f}" for r in s["ratios"]) or "-"
        print(
            f"{'':14}  ratio {s['ratio_median']:.3f} (rounds: {ratios}) "
            f"target >= {s['target_ratio']:.2f}  {verdict}"
        )
        if s["redis"]:
            per_command = s["redis"]["per_command_per_request"].items()
            calls = ", ".join(f"{k} {v:.3g}" for k, v in per_command if v >= 0.001)
            print(f"{'':14}  redis per request: {calls}")
        if s["probe"]:
            shown = ", ".join(f"{k}: {v}" for k, v in s["probe"].items() if k != "server")
            print(f"{'':14}  probe: {shown}")
        if s["error"]:
            print(f"{'':14}  error: {s['error'].splitlines()[0][:200]}")
        print()
