"""A run's results: summaries (medians, spread, ratios), the Markdown tables and chart,
and the benchmark's own sections of docs/performance.md."""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

BASELINES = ("pgbouncer", "direct")
# Targets of issue 9 checked on every run (pgbench -S at 8 clients, idle memory).
TPS_TARGET_RATIO = 0.85
TPS_TARGET_CLIENTS = 8
RSS_TARGET_BYTES = 100_000_000
HIT_TARGET_US = 20
MISS_P99_TARGET_US = 2000
SCRIPT_TITLES = {
    "select": "pgbench -S (read-only: one primary-key SELECT per transaction)",
    "tpcb": "pgbench default script (TPC-B-like write mix: 5 statements in BEGIN/END)",
}


def summarize_cell(samples: Sequence[dict[str, Any]], targets: Sequence[str]) -> dict[str, Any]:
    """Medians and spread per target, and each pgwarden target's ratios to the baselines."""
    per_target: dict[str, dict[str, Any]] = {}
    for name in targets:
        mine = [s for s in samples if s["target"] == name]
        if not mine:
            continue
        tps = [s["tps"] for s in mine]
        cpu = [s["relay_cpu_us_per_tx"] for s in mine if s["relay_cpu_us_per_tx"] is not None]
        sys_ = [s["relay_sys_us_per_tx"] for s in mine if s["relay_sys_us_per_tx"] is not None]
        pdp = [s["pdp_cpu_us_per_tx"] for s in mine if s.get("pdp_cpu_us_per_tx") is not None]
        per_target[name] = {
            "tps_median": statistics.median(tps),
            "tps_min": min(tps),
            "tps_max": max(tps),
            "latency_avg_ms_median": statistics.median(s["latency_avg_ms"] for s in mine),
            "latency_p99_ms_median": statistics.median(s["latency_p99_ms"] for s in mine),
            "relay_cpu_us_per_tx_median": statistics.median(cpu) if cpu else None,
            "relay_sys_us_per_tx_median": statistics.median(sys_) if sys_ else None,
            "pdp_cpu_us_per_tx_median": statistics.median(pdp) if pdp else None,
            "failed": sum(s["failed"] for s in mine),
            "errors": sorted({s["error"] for s in mine if s.get("error")}),
        }
    ratios: dict[str, float] = {}
    for name in per_target:
        if name in BASELINES:
            continue
        for base in BASELINES:
            if base in per_target:
                ratios[f"{name}/{base}"] = (
                    per_target[name]["tps_median"] / per_target[base]["tps_median"]
                )
    return {"targets": per_target, "ratios": ratios}


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 9's targets that this run measures, each with the number and a verdict."""
    checks: list[dict[str, Any]] = []
    for cell in results["throughput"]:
        if cell["script"] != "select" or cell["clients"] != TPS_TARGET_CLIENTS:
            continue
        for key, ratio in cell["summary"]["ratios"].items():
            if key.startswith("pgwarden") and key.endswith("/pgbouncer"):
                checks.append(
                    {
                        "target": f"{key} TPS, pgbench -S -M {cell['mode']}, "
                        f"{TPS_TARGET_CLIENTS} clients >= {TPS_TARGET_RATIO}",
                        "value": round(ratio, 3),
                        "met": ratio >= TPS_TARGET_RATIO,
                    }
                )
    for mem in results["memory"]:
        if not mem["target"].startswith("pgwarden"):
            continue
        rss = mem["rss_idle_kib"] * 1024
        checks.append(
            {
                "target": f"{mem['target']} RSS with {mem['connections']:,} idle connections "
                f"< {RSS_TARGET_BYTES / 1e6:.0f} MB",
                "value": f"{rss / 1e6:.1f} MB",
                "met": rss < RSS_TARGET_BYTES,
            }
        )
    decisions = results.get("decisions")
    if decisions:
        checks.append(
            {
                "target": f"cache-hit decision p50 < {HIT_TARGET_US} µs",
                "value": f"{decisions['hit_now_p50_us']} µs",
                "met": decisions["hit_now_p50_us"] < HIT_TARGET_US,
            }
        )
        policies = [("example policy", decisions)]
        if "policy_pack" in decisions:
            policies.append(("policies/", decisions["policy_pack"]))
        checks += [
            {
                "target": f"cache-miss decision p99 (proxy → PDP → OPA), {name} "
                f"< {MISS_P99_TARGET_US} µs",
                "value": f"{figures['miss_p99_us']:.0f} µs",
                "met": figures["miss_p99_us"] < MISS_P99_TARGET_US,
            }
            for name, figures in policies
        ]
    return checks


# -- Markdown --------------------------------------------------------------------------------


def _spread(t: dict[str, Any]) -> str:
    med = t["tps_median"]
    half = (t["tps_max"] - t["tps_min"]) / 2
    return f"{med:,.0f} ±{100 * half / med:.0f}%" if med else "0"


def throughput_markdown(results: dict[str, Any]) -> str:
    targets = [t["name"] for t in results["settings"]["targets"]]
    candidates = [t for t in targets if t not in BASELINES]
    out: list[str] = []
    for script in results["settings"]["scripts"]:
        cells = [c for c in results["throughput"] if c["script"] == script]
        if not cells:
            continue
        out += [f"#### {SCRIPT_TITLES.get(script, script)}", ""]
        header = ["mode", "clients", *(f"{t} TPS" for t in targets)]
        ratio_keys = [f"{c}/{b}" for c in candidates for b in BASELINES if b in targets]
        header += ratio_keys
        out += [
            "| " + " | ".join(header) + " |",
            "|" + " --- |" * 2 + " ---: |" * (len(header) - 2),
        ]
        for cell in cells:
            summary = cell["summary"]
            row = [cell["mode"], str(cell["clients"])]
            row += [
                _spread(summary["targets"][t]) if t in summary["targets"] else "" for t in targets
            ]
            row += [
                f"**{summary['ratios'][k]:.2f}**" if k in summary["ratios"] else ""
                for k in ratio_keys
            ]
            out.append("| " + " | ".join(row) + " |")
        out += [
            "",
            "Latency, ms (average / p99), and the relaying process's CPU time per "
            "transaction (of it, in the kernel; + the PDP's, for a target with one):",
            "",
        ]
        header = ["mode", "clients", *targets]
        out += ["| " + " | ".join(header) + " |", "|" + " --- |" * 2 + " ---: |" * len(targets)]
        for cell in cells:
            row = [cell["mode"], str(cell["clients"])]
            for t in targets:
                s = cell["summary"]["targets"].get(t)
                if s is None:
                    row.append("")
                    continue
                text = f"{s['latency_avg_ms_median']:.3f} / {s['latency_p99_ms_median']:.3f}"
                if s["relay_cpu_us_per_tx_median"] is not None:
                    text += (
                        f" · {s['relay_cpu_us_per_tx_median']:.0f} µs CPU"
                        f" ({s['relay_sys_us_per_tx_median']:.0f} kernel)"
                    )
                if s.get("pdp_cpu_us_per_tx_median") is not None:
                    text += f" + PDP {s['pdp_cpu_us_per_tx_median']:.0f} µs"
                row.append(text)
            out.append("| " + " | ".join(row) + " |")
        out.append("")
        errors = [
            f"- {t}, {cell['mode']}, {cell['clients']} clients: `{error}`"
            for cell in cells
            for t, summary in cell["summary"]["targets"].items()
            for error in summary.get("errors", [])
        ]
        if errors:
            out += ["pgbench runs in which clients were aborted:", "", *errors, ""]
    return "\n".join(out)


def bulk_markdown(results: dict[str, Any]) -> str:
    reads = results.get("bulk") or []
    if not reads:
        return "Not measured in this run.\n"
    by_target: dict[str, list[dict[str, Any]]] = {}
    for r in reads:
        by_target.setdefault(r["target"], []).append(r)
    first = reads[0]
    out = [
        f"`SELECT id, email FROM bulk`: {first['rows']:,} rows, {first['megabytes']:.1f} MB "
        "on the wire, read by psql into /dev/null; median of the rounds (min-max).",
        "",
        "| path | seconds | MB/s | rows/s | vs direct |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    direct = statistics.median(r["seconds"] for r in by_target.get("direct", reads))
    for target, rs in by_target.items():
        secs = sorted(r["seconds"] for r in rs)
        median = statistics.median(secs)
        out.append(
            f"| {target} | {median:.2f} ({secs[0]:.2f}-{secs[-1]:.2f}) "
            f"| {first['megabytes'] / median:.0f} | {first['rows'] / median:,.0f} "
            f"| {direct / median:.2f} |"
        )
    return "\n".join(out) + "\n"


def memory_markdown(results: dict[str, Any]) -> str:
    if not results["memory"]:
        return "Not measured in this run.\n"
    out = [
        "| target | idle connections | RSS before | RSS, connections idle | per connection |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for mem in results["memory"]:
        out.append(
            f"| {mem['target']} | {mem['connections']:,} | {mem['rss_before_kib'] / 1024:.1f} MiB"
            f" | **{mem['rss_idle_kib'] / 1024:.1f} MiB**"
            f" ({mem['rss_idle_kib'] * 1024 / 1e6:.0f} MB)"
            f" | {mem['per_connection_kib']:.1f} KiB |"
        )
    return "\n".join(out) + "\n"


def decisions_markdown(d: dict[str, Any]) -> str:
    """The "Decisions" table from ``bench.pdp_bench.measure_decisions``'s figures: the
    example policy's at the top level of ``d``, the shipped pack's under ``policy_pack``
    (a run from before the pack was measured has only the first column)."""

    def us(value: float) -> str:
        return f"{value:.2f} µs" if value < 100 else f"{value:,.0f} µs"

    columns = [d] + ([d["policy_pack"]] if "policy_pack" in d else [])

    def row(label: str, show: Callable[..., str], *keys: str) -> str:
        cells = [show(*(c[k] for k in keys)) if all(k in c for k in keys) else "—" for c in columns]
        return f"| {label} | " + " | ".join(cells) + " |"

    def rate(value: int, refused: int) -> str:
        return f"{value:,}" + (f" ({refused} refused)" if refused else "")

    def spread(values: list[float]) -> str:
        return f"{us(min(values))} to {us(max(values))}"

    def pair(p50: float, p99: float) -> str:
        return f"{us(p50)} / {us(p99)}"

    callers = f"PDP decisions/s on distinct inputs, {d['concurrency']} concurrent callers"
    rows: list[tuple[str, Callable[..., str], tuple[str, ...]]] = [
        ("miss p50: proxy client → PDP → OPA → client, one statement", us, ("miss_p50_us",)),
        ("miss p90", us, ("miss_p90_us",)),
        ("miss p99", us, ("miss_p99_us",)),
        ("miss p99.9", us, ("miss_p999_us",)),
        ("miss mean", us, ("miss_mean_us",)),
        ("miss p99 of each round (lowest to highest)", spread, ("miss_p99_rounds_us",)),
        ("misses refused (timed all the same)", str, ("miss_refused",)),
        ("… of which the PDP handler, mean", us, ("pdp_handler_mean_us",)),
        ("… of which the OPA round trip from the PDP, mean", us, ("opa_mean_us",)),
        ("CPU time per miss: client (this process)", us, ("cpu_client_us",)),
        ("CPU time per miss: PDP", us, ("cpu_pdp_us",)),
        ("CPU time per miss: OPA", us, ("cpu_opa_us",)),
        *(
            (
                f"{callers}, {batch} statement(s) per call",
                rate,
                (f"decisions_per_s_batch{batch}", f"refused_batch{batch}"),
            )
            for batch in (1, 8)
        ),
        (
            "hit p50 / p99: `client.decide_now(...)` (the proxy's hot path)",
            pair,
            ("hit_now_p50_us", "hit_now_p99_us"),
        ),
        ("hit p50 / p99: `await client.decide(...)`", pair, ("hit_p50_us", "hit_p99_us")),
        ("timer overhead p50 (included in the hits)", us, ("timer_p50_us",)),
    ]
    lines = [
        "| measure | example policy |" + (" policies/ |" if len(columns) > 1 else ""),
        "| --- |" + " ---: |" * len(columns),
    ] + [row(label, show, *keys) for label, show, keys in rows]
    load = f"load average {d['load_before']:.2f} before, {d['load_after']:.2f} after"
    rounds = f" in {d['rounds']} interleaved rounds" if "rounds" in d else ""
    return (
        f"{d['misses']:,} misses one at a time per policy{rounds}, {d['hits']:,} hits "
        f"({load}):\n\n" + "\n".join(lines) + "\n"
    )


def checks_markdown(checks: Sequence[dict[str, Any]]) -> str:
    out = ["| target | this run | met |", "| --- | ---: | :---: |"]
    out += [f"| {c['target']} | {c['value']} | {'yes' if c['met'] else '**no**'} |" for c in checks]
    return "\n".join(out) + "\n"


def machine_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    s = results["settings"]
    return (
        f"Run `{results['run_id']}` (pgwarden `{m['pgwarden_commit']}`): {m['cpu']}, "
        f"{m['cpus']} CPUs, {m['memory_gib']:.0f} GiB RAM, "
        f"{m['os']}, Linux {m['kernel']}; PostgreSQL {m['postgresql']}, PgBouncer "
        f"{m['pgbouncer']}, Python {m['python']}, uvloop {m['uvloop']}. "
        f"Load average {m['load_before']:.2f} before, {m['load_after']:.2f} after: the "
        f"machine is shared with other engineers' test runs, which is why every configuration "
        f"runs in interleaved rounds. pgbench scale {s['scale']}, {s['rounds']} rounds of "
        f"{s['duration_s']} s per configuration and target (targets rotated each round), "
        + (f"at a fixed {s['rate']:,} TPS (pgbench -R), " if s.get("rate") else "")
        + "`-j` = min(clients, CPUs), everything on loopback TCP without TLS. Medians of the "
        "rounds; ± is half the min-max spread of TPS. Targets: "
        + "; ".join(f"**{t['name']}**: {t['description']}" for t in s["targets"])
        + ".\n"
    )


# -- Chart -----------------------------------------------------------------------------------


def chart(results: dict[str, Any], path: Path) -> None:
    """Grouped bars: median TPS per configuration and target, min-max as error bars."""
    targets = [t["name"] for t in results["settings"]["targets"]]
    scripts = [
        s
        for s in results["settings"]["scripts"]
        if any(c["script"] == s for c in results["throughput"])
    ]
    fig, axes = plt.subplots(len(scripts), 1, figsize=(12, 4.2 * len(scripts)), squeeze=False)
    width = 0.8 / max(1, len(targets))
    for ax, script in zip(axes[:, 0], scripts, strict=True):
        cells = [c for c in results["throughput"] if c["script"] == script]
        for i, name in enumerate(targets):
            xs, ys, lo, hi = [], [], [], []
            for x, cell in enumerate(cells):
                t = cell["summary"]["targets"].get(name)
                if t is None:
                    continue
                xs.append(x + (i - (len(targets) - 1) / 2) * width)
                ys.append(t["tps_median"])
                lo.append(t["tps_median"] - t["tps_min"])
                hi.append(t["tps_max"] - t["tps_median"])
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=name)
        for x, cell in enumerate(cells):
            ratio = cell["summary"]["ratios"].get("pgwarden/pgbouncer")
            top = max(t["tps_max"] for t in cell["summary"]["targets"].values())
            if ratio is not None:
                ax.annotate(f"{ratio:.2f}x", (x, top), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(cells)))
        ax.set_xticklabels([f"{c['mode']}\nc={c['clients']}" for c in cells], fontsize=8)
        ax.set_ylabel("TPS (median of rounds)")
        ax.set_title(
            SCRIPT_TITLES.get(script, script) + " — label: pgwarden/PgBouncer", fontsize=10
        )
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# -- docs/performance.md ---------------------------------------------------------------------


def update_section(
    path: Path,
    heading: str,
    block_id: str,
    content: str,
    *,
    intro: str,
    after: str | None = None,
) -> None:
    """Replace the generated block ``block_id`` in section ``heading`` of ``path``, leaving
    everything else (other sections, hand-written text in this one) as it is. A missing
    section is added with ``intro``: after section ``after`` if there is one, else before
    the first section. The file is read right before it is written."""
    start = f"<!-- bench:{block_id}:start (generated by bench/run; edit around it) -->"
    end = f"<!-- bench:{block_id}:end -->"
    block = f"{start}\n{content.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# Performance\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        section = _section_span(text, heading)
        if section is not None:
            at = section[1]
            text = text[:at].rstrip() + f"\n\n{block}\n\n" + text[at:].lstrip()
        else:
            new = f"{heading}\n\n{intro.rstrip()}\n\n{block}\n\n"
            previous = _section_span(text, after) if after else None
            first = re.search(r"^## ", text, re.MULTILINE)
            at = previous[1] if previous else first.start() if first else len(text)
            text = text[:at].rstrip() + "\n\n" + new + text[at:].lstrip()
    path.write_text(text.rstrip() + "\n")


def _section_span(text: str, heading: str) -> tuple[int, int] | None:
    """Where section ``heading`` starts and where the next ``## `` section starts."""
    match = re.search(rf"^{re.escape(heading)}\s*$", text, re.MULTILINE)
    if match is None:
        return None
    nxt = re.search(r"^## ", text[match.end() :], re.MULTILINE)
    return match.start(), match.end() + nxt.start() if nxt else len(text)
