"""Turn the figures into the report: ratios to the floors, the Markdown table, the backlog lines.

Runs in the benchmark process once every measurement is done. Pure functions of the result
dicts (the same dicts the JSON holds): they format, and print nothing themselves.
"""

from __future__ import annotations


def add_ratios(result: dict, floors: dict) -> None:
    """Add to `result` each figure's ratio to its floor."""
    insert = floors["orm_insert_per_s"]
    rtt = floors["tcp_connect_rtt_ms"]
    result["ratios"] = {
        "noop_vs_insert": round(result["noop"]["end_to_end_per_s"] / insert, 3),
        "write_row_vs_insert": round(result["write_row"]["end_to_end_per_s"] / insert, 3),
        "offload_busy_vs_insert": round(result["noop"]["offload_per_s"] / insert, 3),
        "offload_vs_insert": round(result["offload"]["single_per_s"] / insert, 3),
        "offload_many_vs_insert": round(result["offload"]["bulk_per_s"] / insert, 3),
        "started_p50_vs_rtt": round(result["latency"]["to_started"]["p50_ms"] / rtt, 1),
        "successful_p50_vs_rtt": round(result["latency"]["to_successful"]["p50_ms"] / rtt, 1),
    }


def _pcts(figures: dict, rtt: float) -> str:
    p = figures
    return f"{p['p50_ms']:.2f}/{p['p95_ms']:.2f}/{p['p99_ms']:.2f} ({p['p50_ms'] / rtt:.0f}x)"


def table_rows(results: list[dict], floors: dict) -> list[tuple[str, list[str]]]:
    """Return the rows of the summary table, one cell per worker count."""
    insert, rtt = floors["orm_insert_per_s"], floors["tcp_connect_rtt_ms"]

    def rate(r: dict, key: str, sub: str) -> str:
        value = r[key][sub]
        return f"{value:,.0f} ({value / insert:.2f}x)"

    def mem(r: dict, key: str) -> str:
        m = r["memory"]
        if key == "server":
            return f"{m['server_idle_mb']:.0f} / {m['server_peak_mb']:.0f}"
        return f"{max(m['workers_idle_mb']):.0f} / {max(m['workers_peak_mb']):.0f}"

    def lat(r: dict, key: str) -> str:
        return _pcts(r["latency"][key], rtt)

    cells = {
        "noop end-to-end, tasks/s": lambda r: rate(r, "noop", "end_to_end_per_s"),
        "write_row end-to-end, tasks/s": lambda r: rate(r, "write_row", "end_to_end_per_s"),
        "offload, nothing else running, /s": lambda r: rate(r, "offload", "single_per_s"),
        "enqueue (django.tasks), same run, /s": lambda r: rate(r, "offload", "enqueue_per_s"),
        "enqueue cost / offload cost": lambda r: f"{r['offload']['enqueue_cost_vs_offload']:.2f}",
        "offload_many (1000 a call), tasks/s": lambda r: rate(r, "offload", "bulk_per_s"),
        "offload while noop tasks run, /s": lambda r: rate(r, "noop", "offload_per_s"),
        "offload->started p50/95/99 ms": lambda r: lat(r, "to_started"),
        "offload->SUCCESSFUL p50/95/99 ms": lambda r: lat(r, "to_successful"),
        "seen by caller p50/95/99 ms": lambda r: lat(r, "to_seen_by_caller"),
        "server RSS idle / peak, MB": lambda r: mem(r, "server"),
        "worker RSS idle / peak (max), MB": lambda r: mem(r, "worker"),
    }
    return [(name, [cell(r) for r in results]) for name, cell in cells.items()]


def format_table(meta: dict, floors: dict, results: list[dict]) -> str:
    """Return the summary as a Markdown table."""
    rows = table_rows(results, floors)
    head = ["figure"] + [f"workers={r['workers']}" for r in results]
    widths = [max(len(head[0]), *(len(name) for name, _ in rows))]
    for i in range(len(results)):
        widths.append(max(len(head[i + 1]), *(len(cells[i]) for _, cells in rows)))

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [
        f"leek {meta['db']}, {meta['cpus']} cores, Python {meta['python']}, "
        f"Django {meta['django']}, {meta['tasks']} tasks a batch, "
        f"{meta['samples']} latency samples",
        f"floors: ORM insert {floors['orm_insert_per_s']:,.0f}/s; "
        f"multiprocessing.Queue to 2 consumers {floors['mp_queue_2_consumers_per_s']:,.0f}/s; "
        f"TCP connect + round trip {floors['tcp_connect_rtt_ms']:.3f} ms (median)",
        "(throughputs: ratio to the ORM insert floor; latencies: p50 as a multiple of the TCP "
        "floor)",
        "",
        line(head),
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    out += [line([name, *cells]) for name, cells in rows]
    return "\n".join(out)


def format_backlog(b: dict) -> str:
    """Return the backlog figures as two lines."""
    u = b["urgent_started"]
    return (
        f"\nbacklog: {b['rows']:,} READY rows, {b['workers']} workers, {b['seconds']:g} s: "
        f"{b['drained']:,} drained ({b['drained_per_s']:,.0f}/s); server RSS idle "
        f"{b['server_idle_mb']:.0f} MB, peak {b['server_peak_mb']:.0f} MB "
        f"(+{b['server_peak_mb'] - b['server_idle_mb']:.0f} MB)\n"
        f"priority-10 task offloaded on top: offload->started p50/95/99/max "
        f"{u['p50_ms']:.2f}/{u['p95_ms']:.2f}/{u['p99_ms']:.2f}/{u['max_ms']:.2f} ms"
    )
