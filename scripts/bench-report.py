#!/usr/bin/env python3
"""Merges the JSON reports of `socksmith bench` runs (one per proxy) into the results of
scripts/bench: results.json (everything), results.md (the side-by-side table, the ratios
against the issues' targets, what socksmith's features cost beside the quiet socksmith, the
blocklist's own figures and the session future's size) and chart.svg (grouped bars per metric,
normalized to the best). Optionally refreshes the results section of README.md between its
bench markers.

Standard library only, so that it runs on any python3.
"""

import argparse
import datetime
import html
import json
import os
import platform
import sys

ORDER = ["direct", "socksmith", "socksmith-quiet", "socksmith-auth", "microsocks", "microsocks-auth", "dante", "ssh"]
PEERS = ["microsocks", "dante", "ssh"]
# socksmith-quiet with one feature on: shown in the feature table beside socksmith-quiet,
# not in the side-by-side table or the chart (which compare proxies).
VARIANTS = ["socksmith-http", "socksmith-blocklist", "socksmith-admin"]
# (what is compared, metric, variant, goal as text, the ratio variant/baseline must pass or
# None where the issues ask only for the figures side by side). The baseline is always
# socksmith-quiet: the same binary, log level and open-file limit, the feature off.
FEATURES = [
    ("authentication (users as set up below)", "connrate", "socksmith-auth", ">= 0.90x", lambda r: r >= 0.9),
    ("HTTP CONNECT instead of SOCKS5", "throughput_1_up", "socksmith-http", "", None),
    ("HTTP CONNECT instead of SOCKS5", "throughput_1_down", "socksmith-http", "", None),
    ("HTTP CONNECT instead of SOCKS5", "throughput_n_up", "socksmith-http", "", None),
    ("HTTP CONNECT instead of SOCKS5", "throughput_n_down", "socksmith-http", "", None),
    ("HTTP CONNECT instead of SOCKS5", "connrate", "socksmith-http", "", None),
    ("1,000,000-domain blocklist, sniffing", "connrate", "socksmith-blocklist", ">= 0.95x", lambda r: r >= 0.95),
    ("1,000,000-domain blocklist, sniffing", "throughput_1_up", "socksmith-blocklist", ">= 0.95x", lambda r: r >= 0.95),
    ("1,000,000-domain blocklist, sniffing", "throughput_1_down", "socksmith-blocklist", ">= 0.95x", lambda r: r >= 0.95),
    ("--admin (metrics on)", "connrate", "socksmith-admin", ">= 0.97x", lambda r: r >= 0.97),
    ("--admin (metrics on)", "throughput_1_up", "socksmith-admin", ">= 0.97x", lambda r: r >= 0.97),
    ("--admin (metrics on)", "throughput_1_down", "socksmith-admin", ">= 0.97x", lambda r: r >= 0.97),
    # The status page lists every live session: its row is what this costs, shown, not judged.
    ("--admin (metrics on)", "idle_kib_per_tunnel", "socksmith-admin", "", None),
    ("--admin (metrics on)", "idle_fds_per_tunnel", "socksmith-admin", "", None),
]
# The blocklist example's figures: (JSON key, label, unit).
BLOCKLIST = [
    ("load_ms", "load time (wall clock)", "ms"),
    ("load_cpu_ms", "load time (CPU time of the loading thread)", "ms"),
    ("rss_delta_mib", "memory the loaded list adds (RSS)", "MiB"),
    ("heap_mib", "memory by the list's own count (arena and index)", "MiB"),
    ("peak_rss_mib", "peak RSS of the process (file text included while parsing)", "MiB"),
    ("lookups_per_sec", "lookups per second (wall clock)", "lookups/s"),
    ("lookups_per_cpu_sec", "lookups per CPU second", "lookups/s"),
]
# The goals of the policy issue for that list, checked on the median.
BLOCKLIST_GOALS = {
    "load_cpu_ms": ("about 1 s (<= 1,500 ms)", lambda v: v <= 1500),
    "rss_delta_mib": ("well under 100 MiB (< 100)", lambda v: v < 100),
}
# The release-mode bound of the session-size test (SESSION_TASK_BOUND in
# crates/socksmith/src/server/connection.rs).
SESSION_TASK_BOUND = 640
COLORS = {
    "direct": "#9e9e9e",
    "socksmith": "#d1495b",
    "socksmith-quiet": "#8f2d56",
    "socksmith-auth": "#edae49",
    "microsocks": "#00798c",
    "microsocks-auth": "#66a182",
    "dante": "#30638e",
    "ssh": "#6d597a",
    "socksmith-http": "#f4a259",
    "socksmith-blocklist": "#5b8e7d",
    "socksmith-admin": "#bc4b51",
}
# Metrics in the table, in order.
TABLE = [
    "throughput_1_up", "throughput_1_down", "throughput_n_up", "throughput_n_down",
    "connrate", "connrate_p50_us", "connrate_p99_us", "connrate_errors",
    "rr", "rr_p50_us", "rr_p99_us", "rr_errors", "udp", "udp_p99_us", "udp_lost", "udp_corrupted",
    "idle_kib_per_tunnel", "idle_kib_per_tunnel_all", "idle_rss_kib_per_tunnel",
    "idle_fds_per_tunnel", "idle_open",
]
# Metrics in the chart: (key, short label).
CHART = [
    ("throughput_1_up", "1 tunnel up"),
    ("throughput_1_down", "1 tunnel down"),
    ("throughput_n_up", "8 tunnels up"),
    ("throughput_n_down", "8 tunnels down"),
    ("connrate", "connection rate"),
    ("rr", "request/response"),
    ("rr_p99_us", "round trip p99"),
    ("udp", "UDP echo"),
    ("idle_kib_per_tunnel", "idle tunnel"),
]
MARKER_BEGIN = "<!-- bench:begin (scripts/bench writes this section) -->"
MARKER_END = "<!-- bench:end -->"


def fmt(x):
    a = abs(x)
    if a >= 1000 or (a >= 100 and x == int(x)):
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.1f}"
    if a >= 10:
        return f"{x:.2f}"
    return f"{x:.3g}" if a < 1 else f"{x:.2f}"


class Run:
    def __init__(self, report, failed=(), rounds=1):
        self.report = report
        self.label = report["label"]
        self.metrics = {m["key"]: m for m in report["metrics"]}
        # Runs of this contender that failed: (run name, exit status, last error line).
        self.failed = list(failed)
        self.rounds = rounds

    def median(self, key):
        m = self.metrics.get(key)
        if not m or not m.get("summary"):
            return None
        return m["summary"]["median"]

    def cell(self, key):
        m = self.metrics.get(key)
        if not m:
            return "–"
        s = m.get("summary")
        if not s:
            note = m.get("note") or "n/a"
            if note.startswith("unsupported"):
                return "unsupported"
            if note == "phase not selected":
                return "–"
            return "n/a"
        text = fmt(s["median"])
        n = len(s["samples"])
        if n > 1 and s["median"]:
            half_range = (s["max"] - s["min"]) / 2 / abs(s["median"]) * 100
            text += f" ±{half_range:.0f}%"
        idle = key.startswith("idle")
        if not idle:
            # The median's sample count; fewer than the rounds means a run failed or a
            # repeat gave no figure, and the mark sends the reader to the list below.
            text += f" n={n}" if n >= self.rounds else f" **n={n}/{self.rounds}**"
        if any(("idle" in run) == idle for run, _, _ in self.failed):
            text += " †"
        return text


def summarize(samples):
    s = sorted(samples)
    n = len(s)
    median = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    return {"median": median, "min": s[0], "max": s[-1], "samples": samples}


def merge(reports):
    """One report per contender from several runs of it (rounds of some phases, the idle
    phase alone): the samples of each metric are pooled and summarized again."""
    if len(reports) == 1:
        return reports[0]
    merged = json.loads(json.dumps(reports[0]))
    by_key = {m["key"]: m for m in merged["metrics"]}
    for m in by_key.values():
        m["summary"], m["note"] = None, None
    pooled = {k: [] for k in by_key}
    notes = {k: None for k in by_key}
    for report in reports:
        for m in report["metrics"]:
            if m.get("summary"):
                pooled[m["key"]].extend(m["summary"]["samples"])
            elif m.get("note") and m["note"] != "phase not selected" and not notes[m["key"]]:
                notes[m["key"]] = m["note"]
        if report.get("idle"):
            merged["idle"] = report["idle"]
    for key, m in by_key.items():
        if pooled[key]:
            m["summary"] = summarize(pooled[key])
        else:
            m["note"] = notes[key] or "phase not selected"
    merged["repeat"] = max(
        len(pooled[k]) for k in pooled if not k.startswith("idle")
    ) if any(pooled[k] for k in pooled if not k.startswith("idle")) else 1
    merged["notes"] = sorted({n for r in reports for n in r.get("notes", [])})
    merged["runs_merged"] = len(reports)
    return merged


def load_failed(path):
    """failed.tsv of scripts/bench: contender, run, exit status, last error line."""
    failed = {}
    if not path:
        return failed
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 4:
                failed.setdefault(parts[0], []).append((parts[1], parts[2], parts[3]))
    return failed


def load(paths, failed=None, rounds=1):
    failed = failed or {}
    reports = {}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        # A bench report, or an earlier results.json (to redraw it).
        for report in data["runs"] if "runs" in data else [data]:
            reports.setdefault(report["label"], []).append(report)
    runs = {label: Run(merge(rs), failed.get(label, ()), rounds)
            for label, rs in reports.items()}
    ordered = [runs[k] for k in ORDER if k in runs]
    ordered += [r for k, r in runs.items() if k not in ORDER]
    return ordered


def best_peer(runs, key, higher):
    values = [(r.median(key), r.label) for r in runs if r.label in PEERS]
    values = [(v, l) for v, l in values if v is not None and v > 0]
    if not values:
        return None
    return max(values) if higher else min(values)


def targets(runs):
    by = {r.label: r for r in runs}
    ours = by.get("socksmith")
    rows = []

    def add(target, value, goal, met, why=""):
        rows.append({"target": target, "measured": value, "goal": goal, "met": met, "detail": why})

    if ours is None:
        return rows
    for key, name in [("throughput_1_up", "upload"), ("throughput_1_down", "download")]:
        v = ours.median(key)
        peer = best_peer(runs, key, True)
        if v is not None and peer:
            r = v / peer[0]
            add(f"single-tunnel throughput ({name}) vs best peer", f"{r:.2f}x ({fmt(v)} vs {peer[1]} {fmt(peer[0])} Gbit/s)", ">= 1.2x", r >= 1.2)
        d = by.get("direct")
        if v is not None and d and d.median(key):
            r = v / d.median(key)
            add(f"single-tunnel throughput ({name}) vs direct loopback", f"{r:.0%} ({fmt(v)} vs {fmt(d.median(key))} Gbit/s)", ">= 60%", r >= 0.6)
    v = ours.median("connrate")
    peer = best_peer(runs, "connrate", True)
    if v is not None and peer:
        r = v / peer[0]
        add("connection rate vs best peer", f"{r:.2f}x ({fmt(v)} vs {peer[1]} {fmt(peer[0])} /s)", ">= 1.5x", r >= 1.5)
    d = by.get("direct")
    if v is not None and d and d.median("connrate"):
        r = v / d.median("connrate")
        add("connection rate vs direct loopback", f"{r:.2f}x ({fmt(v)} vs {fmt(d.median('connrate'))} /s)", ">= 0.5x", r >= 0.5)
    v = ours.median("udp")
    if v is not None and d and d.median("udp"):
        r = v / d.median("udp")
        add("UDP datagrams vs direct loopback", f"{r:.2f}x ({fmt(v)} vs {fmt(d.median('udp'))} /s)", ">= 0.67x", r >= 0.67)
    v = ours.median("udp_p99_us")
    if v is not None:
        add("UDP round trip p99", f"{fmt(v)} us", "< 400 us", v < 400)
    v = ours.median("rr_p99_us")
    peer = best_peer(runs, "rr_p99_us", False)
    if v is not None and peer:
        add("request/response p99 vs best peer", f"{fmt(v)} us vs {peer[1]} {fmt(peer[0])} us", "no worse", v <= peer[0])
    v = ours.median("idle_kib_per_tunnel")
    if v is not None:
        add("memory (PSS) per idle tunnel", f"{v:.2f} KiB", "<= 1.5 KiB", v <= 1.5)
    v = ours.median("idle_kib_per_tunnel_all")
    if v is not None:
        add("memory (PSS) per idle tunnel, all tunnels", f"{v:.2f} KiB", "<= 1.5 KiB", v <= 1.5)
    v = ours.median("idle_fds_per_tunnel")
    if v is not None:
        add("descriptors per idle tunnel", f"{v:.2f}", "<= 2", v <= 2.0 + 0.01)
    return rows


def feature_costs(runs):
    """Each feature's figure beside socksmith-quiet's, as a ratio (variant / baseline)."""
    by = {r.label: r for r in runs}
    base = by.get("socksmith-quiet")
    rows = []
    for feature, key, variant, goal, passes in FEATURES:
        v = by.get(variant)
        if v is None or base is None:
            continue
        bm, vm = base.median(key), v.median(key)
        ratio = vm / bm if bm and vm is not None else None
        rows.append({
            "feature": feature, "metric": key, "variant": variant, "baseline": base.label,
            "baseline_cell": base.cell(key), "variant_cell": v.cell(key),
            "ratio": ratio, "goal": goal,
            "met": None if passes is None or ratio is None else passes(ratio),
        })
    return rows


def load_blocklist(paths):
    """The JSON lines of the blocklist example, one per round: every figure's samples."""
    samples = {key: [] for key, _, _ in BLOCKLIST}
    domains = None
    for path in paths:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                data = json.loads(line)
                domains = data.get("domains", domains)
                for key in samples:
                    if key in data:
                        samples[key].append(float(data[key]))
    figures = {key: summarize(v) for key, v in samples.items() if v}
    return {"domains": domains, "figures": figures} if figures else None


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": cpu, "kernel": platform.release()}


# Other work above this share of one core, on average over the measurements, makes the
# run a loaded one: it competes with the pinned proxy and load for their cores.
LOADED_CORES = 0.10


def other_work_cores(cpu):
    """Cores that work outside the bench's process tree used on average between the two
    readings of scripts/cpu-snapshot.py (None without them)."""
    if not cpu:
        return None
    (wall0, machine0, tree0, hz), (wall1, machine1, tree1, _) = (
        [float(v) for v in reading.split()] for reading in cpu)
    if wall1 <= wall0:
        return None
    other_ticks = (machine1 - machine0) - (tree1 - tree0)
    # Slightly negative from tick rounding; never clamped from far below (that hid a bias).
    return other_ticks / hz / (wall1 - wall0)


def load_paragraph(meta):
    """How busy the machine was, and whether with other work than the bench's own."""
    loadavg = meta["loadavg"]
    launch, start, end = loadavg if len(loadavg) == 3 else (None, *loadavg)
    text = (f"Load average (1, 5, 15 min)"
            + (f" when `scripts/bench` was launched: {launch}; after its build," if launch else "")
            + f" at the start of the measurements: {start}; at the end: {end} (the later"
            f" readings count the bench's own build, proxies and load).")
    other = other_work_cores(meta.get("cpu"))
    if other is None:
        return text
    text += (f" Work outside the bench's processes used {other:.2f} of a core on average"
             f" during the measurements (user, system, irq and softirq time from `/proc/stat`,"
             f" less the bench's process tree).")
    if other > LOADED_CORES:
        text += (" **The machine was loaded by other work during this run: every figure below"
                 " is from a loaded machine** (ratios from one run hold better than absolute"
                 " figures).")
    return text


def markdown(all_runs, rows, meta):
    labels = {m["key"]: (m["label"], m["unit"]) for r in all_runs for m in r.report["metrics"]}
    runs = [r for r in all_runs if r.label not in VARIANTS]
    out = []
    out.append(f"Run of {meta['date']} ({meta['mode']} mode) on {meta['machine']['cores']} cores"
               f" ({meta['machine']['cpu'] or 'unknown CPU'}, Linux {meta['machine']['kernel']}):"
               f" each proxy pinned to core 0 (`taskset -c 0`), the load and its targets to core 1."
               f" Medians of {meta['repeat']} round{'s' if meta['repeat'] != 1 else ''} (each"
               f" round measures every contender in turn, the order rotated every round),"
               f" ± half the min–max range, n = samples behind the median. Every byte and"
               f" datagram is a pattern checked on arrival; idle memory is PSS.")
    out.append("")
    if meta.get("loadavg"):
        out.append(load_paragraph(meta))
        out.append("")
    labels_present = {r.label for r in runs}
    if "socksmith" in labels_present or "socksmith-quiet" in labels_present:
        out.append(f"- **socksmith** is `socksmith serve` as a user runs it: its default log"
                   f" level (one line per session, to a file), the open-file limit it was"
                   f" started with ({meta.get('socksmith_nofile') or 'the shell default'}).")
        out.append(f"- **socksmith-quiet** is the same binary with `RUST_LOG=warn` (warnings"
                   f" only, like the peers) and the raised open-file limit"
                   f" ({meta.get('raised_nofile') or 'the hard limit'}), as the peers get.")
        out.append("")
    if runs:
        out.append("| metric | unit | " + " | ".join(r.label for r in runs) + " |")
        out.append("|---|---|" + "---:|" * len(runs))
        for key in TABLE:
            if key not in labels:
                continue
            label, unit = labels[key]
            if key.startswith("throughput_n"):
                n = runs[0].report["settings"].get("parallel_tunnels", "N")
                label = label.replace("N tunnels", f"{n} tunnels")
            out.append(f"| {label} | {unit} | " + " | ".join(r.cell(key) for r in runs) + " |")
        out.append("")
    idle_notes = []
    method = ""
    for r in all_runs:
        idle = r.report.get("idle")
        if idle and idle.get("before") and idle.get("after"):
            b, a = idle["before"], idle["after"]
            # Reports from before the two-halves measurement have no midway reading.
            m = idle.get("midway")
            mid = (lambda k: f"→{m[k]}") if m else (lambda k: "")
            half = f" ({idle['opened_first_half']} at midway)" if m else ""
            method = method or idle.get("method", "")
            pss = (f"{b['pss_kib']}{mid('pss_kib')}→{a['pss_kib']} KiB PSS "
                   f"({b['rss_kib']}{mid('rss_kib')}→{a['rss_kib']} RSS)"
                   if "pss_kib" in b else f"{b['rss_kib']}→{a['rss_kib']} KiB RSS")
            stalled = " (it took no more: opening stopped)" if idle.get("stalled") else ""
            idle_notes.append(f"{r.label}: {idle['opened']}/{idle['requested']} open{stalled}{half}, "
                              f"{pss}, {b['fds']}{mid('fds')}→{a['fds']} fds, "
                              f"{b['processes']}→{a['processes']} processes, "
                              f"{idle['alive']}/{idle['probed']} probed alive")
    if idle_notes:
        out.append("Idle tunnels (" + method + "): "
                   + "; ".join(idle_notes) + ".")
        out.append("")
    features = meta.get("feature_costs") or []
    if features:
        out.append("What socksmith's features cost: socksmith-quiet with one feature on, beside"
                   " socksmith-quiet (the same binary, log level and open-file limit, the feature"
                   " off) from the same rounds; ratio = with / without.")
        out.append("")
        out.append("| feature | metric | unit | socksmith-quiet | with it | ratio | goal | |")
        out.append("|---|---|---|---:|---:|---:|---|---|")
        for row in features:
            label, unit = labels.get(row["metric"], (row["metric"], ""))
            if row["metric"].startswith("throughput_n"):
                n = all_runs[0].report["settings"].get("parallel_tunnels", "N")
                label = label.replace("N tunnels", f"{n} tunnels")
            ratio = "–" if row["ratio"] is None else f"{row['ratio']:.2f}x"
            verdict = {None: "", True: "met", False: "**not met**"}[row["met"]]
            out.append(f"| {row['feature']} ({row['variant']}) | {label} | {unit} |"
                       f" {row['baseline_cell']} | {row['variant_cell']} | {ratio} |"
                       f" {row['goal'] or '–'} | {verdict} |")
        out.append("")
    setups = meta.get("setup_notes") or []
    for line in setups:
        out.append(f"- {line}")
    if setups:
        out.append("")
    blocklist = meta.get("blocklist")
    if blocklist:
        domains = blocklist.get("domains") or 0
        out.append(f"Blocklist on its own (`crates/socksmith/examples/blocklist_bench.rs`, release,"
                   f" pinned to the proxy's core): a generated hosts file of"
                   f" {domains:,} domains loaded as the server loads it, then 1,000,000 lookups"
                   f" (half subdomains of listed names, half unlisted names, mixed case).")
        out.append("")
        out.append("| blocklist | unit | median | goal | |")
        out.append("|---|---|---:|---|---|")
        rounds = meta.get("repeat") or 1
        for key, label, unit in BLOCKLIST:
            s = blocklist["figures"].get(key)
            if not s:
                continue
            n = len(s["samples"])
            cell = fmt(s["median"])
            if n > 1 and s["median"]:
                cell += f" ±{(s['max'] - s['min']) / 2 / abs(s['median']) * 100:.0f}%"
            cell += f" n={n}" if n >= rounds else f" **n={n}/{rounds}**"
            if any(label_ == "blocklist" for label_, _ in meta.get("failed_sections", [])):
                cell += " †"
            goal, passes = BLOCKLIST_GOALS.get(key, ("–", None))
            verdict = "" if passes is None else ("met" if passes(s["median"]) else "**not met**")
            out.append(f"| {label} | {unit} | {cell} | {goal} | {verdict} |")
        out.append("")
    size = meta.get("session_task_bytes")
    if size is not None:
        out.append(f"Session task future (release build, `cargo test --release -p socksmith --lib"
                   f" session_task`): **{size} bytes** (the test's bound: {SESSION_TASK_BOUND}).")
        out.append("")
    if rows:
        out.append("| target (socksmith serve) | goal | measured | |")
        out.append("|---|---|---|---|")
        for row in rows:
            out.append(f"| {row['target']} | {row['goal']} | {row['measured']} | "
                       f"{'met' if row['met'] else '**not met**'} |")
        out.append("")
    failures = [(r.label, f) for r in runs for f in r.failed]
    failures += [(label, f) for label, fs in meta.get("failed_only", {}).items() for f in fs]
    if failures:
        out.append("Failed runs († in the table; their figures are missing from the medians):")
        out.append("")
        for label, (run, status, why) in failures:
            out.append(f"- † {label}, run {run}: exit {status}: {why}")
        out.append("")
    notes = sorted({f"{r.label}: {n}" for r in runs for n in r.report.get("notes", [])})
    for n in notes:
        out.append(f"- {n}")
    if notes:
        out.append("")
    return "\n".join(out)


def svg_chart(runs):
    """Grouped bars, one group per metric, one bar per proxy, each relative to the best proxy
    of that metric (1.0 = best); the direct figure (no proxy) is written under the group."""
    proxies = [r for r in runs if r.label != "direct"]
    direct = next((r for r in runs if r.label == "direct"), None)
    groups = []
    for key, name in CHART:
        present = [(r, r.median(key)) for r in proxies if r.median(key) is not None]
        values = [v for _, v in present if v > 0]
        if not values:
            continue
        higher = present[0][0].metrics[key]["higher_is_better"]
        best = max(values) if higher else min(values)
        unit = present[0][0].metrics[key]["unit"]
        bars = []
        for r, v in present:
            if v <= 0:
                score = 0.0 if higher else 1.0
            else:
                score = v / best if higher else best / v
            bars.append((r.label, v, score))
        d = direct.median(key) if direct else None
        groups.append((name, "" if higher else "(lower is better)", unit, d, bars))
    contenders = [r.label for r in proxies]
    bar_w, gap, group_gap = 16, 3, 46
    left, top, height = 60, 110, 300
    group_widths = [len(g[4]) * (bar_w + gap) for g in groups]
    width = int(left + sum(group_widths) + group_gap * len(groups) + 20)
    total_h = top + height + 90
    e = []
    e.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total_h}" '
             f'viewBox="0 0 {width} {total_h}" '
             f'font-family="DejaVu Sans, Helvetica, Arial, sans-serif">')
    e.append(f'<rect width="{width}" height="{total_h}" fill="white"/>')
    e.append(f'<text x="{left}" y="24" font-size="16" font-weight="bold">socksmith bench: '
             f'each metric relative to the best proxy (1.0 = best)</text>')
    e.append(f'<text x="{left}" y="42" font-size="12" fill="#444">Labels on the bars are the '
             f'measured medians; "direct" is the same load without a proxy (loopback limit).'
             f'</text>')
    x = left
    for label in contenders:
        e.append(f'<rect x="{x}" y="56" width="12" height="12" '
                 f'fill="{COLORS.get(label, "#444")}"/>')
        e.append(f'<text x="{x + 17}" y="67" font-size="12">{html.escape(label)}</text>')
        x += 17 + 9 * len(label) + 22
    for frac in [0, 0.25, 0.5, 0.75, 1.0]:
        y = top + height - frac * height
        e.append(f'<line x1="{left - 4}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" '
                 f'stroke="#ddd" stroke-width="1"/>')
        e.append(f'<text x="{left - 8}" y="{y + 4:.1f}" font-size="11" '
                 f'text-anchor="end">{frac:.2f}</text>')
    x = left + group_gap / 2
    for (name, better, unit, d, bars), gw in zip(groups, group_widths):
        for label, value, score in bars:
            h = max(score, 0.003) * height
            y = top + height - h
            e.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w}" height="{h:.1f}" '
                     f'fill="{COLORS.get(label, "#444")}"><title>{html.escape(label)}: '
                     f'{fmt(value)} {html.escape(unit)}</title></rect>')
            tx, ty = x + bar_w / 2 + 4, y - 4
            e.append(f'<text x="{tx:.1f}" y="{ty:.1f}" font-size="10" '
                     f'transform="rotate(-90 {tx:.1f} {ty:.1f})">{fmt(value)}</text>')
            x += bar_w + gap
        cx = x - gw / 2 - gap / 2
        lines = [name, f"{unit} {better}".strip()]
        if d is not None:
            lines.append(f"direct: {fmt(d)}")
        for i, line in enumerate(lines):
            weight = ' font-weight="bold"' if i == 0 else ' fill="#555"'
            e.append(f'<text x="{cx:.1f}" y="{top + height + 18 + 14 * i}" font-size="11" '
                     f'text-anchor="middle"{weight}>{html.escape(line)}</text>')
        x += group_gap
    e.append("</svg>")
    return "\n".join(e) + "\n"


def update_readme(path, md):
    section = (f"{MARKER_BEGIN}\n![socksmith bench chart](bench/chart.svg)\n\n{md}\n{MARKER_END}")
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    if MARKER_BEGIN in text and MARKER_END in text:
        head, rest = text.split(MARKER_BEGIN, 1)
        _, tail = rest.split(MARKER_END, 1)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n## Benchmark\n\n`scripts/bench` (see `bench/`) runs " \
            "`socksmith bench` against no proxy, `socksmith serve`, microsocks, Dante and " \
            "`ssh -D` side by side. Latest results:\n\n" + section + "\n"
    with open(path, "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--mode", default="full")
    ap.add_argument("--readme")
    ap.add_argument("--failed", help="failed.tsv of scripts/bench: runs to mark as failed")
    ap.add_argument("--rounds", type=int, default=0,
                    help="rounds run: a median with fewer samples is marked")
    ap.add_argument("--socksmith-nofile", help="open-file limit `socksmith` was started with")
    ap.add_argument("--raised-nofile", help="open-file limit of the quiet run and the peers")
    ap.add_argument("--notes", help="lines on how contenders were set up (fallbacks, skips)")
    ap.add_argument("--session-size", type=int,
                    help="bytes of the session task's future (release-mode test)")
    ap.add_argument("--blocklist", action="append", default=[],
                    help="JSON lines of the blocklist example, one file per round")
    ap.add_argument("--loadavg", nargs="+", metavar="LOADAVG",
                    help="/proc/loadavg's first three fields at launch (optional), before and"
                         " after the measurements")
    ap.add_argument("--cpu", nargs=2, metavar=("START", "END"),
                    help="scripts/cpu-snapshot.py's readings before and after the measurements")
    ap.add_argument("reports", nargs="*")
    args = ap.parse_args()
    failed = load_failed(args.failed)
    runs = load(args.reports, failed, args.rounds or 1)
    rows = targets(runs)
    if not args.rounds:
        for r in runs:
            r.rounds = max(r.report["repeat"], 1)
    setup_notes = []
    if args.notes:
        with open(args.notes) as f:
            setup_notes = [line.rstrip("\n") for line in f if line.strip()]
    labels = {r.label for r in runs}
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": args.mode,
        "machine": machine(),
        "repeat": args.rounds or max((r.report["repeat"] for r in runs), default=1),
        "socksmith_nofile": args.socksmith_nofile,
        "raised_nofile": args.raised_nofile,
        "loadavg": args.loadavg,
        "cpu": args.cpu,
        "other_work_cores": other_work_cores(args.cpu),
        "setup_notes": setup_notes,
        "feature_costs": feature_costs(runs),
        "blocklist": load_blocklist(args.blocklist),
        "session_task_bytes": args.session_size,
        # Contenders whose every run failed have no report to hang the mark on (the
        # blocklist and session-size sections are listed here when one of theirs failed).
        "failed_only": {k: v for k, v in failed.items() if k not in labels},
        "failed_sections": [(k, f) for k, fs in failed.items()
                            if k in ("blocklist", "session-size") for f in fs],
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"meta": meta, "targets": rows, "runs": [r.report for r in runs],
                   "failed": {r.label: r.failed for r in runs if r.failed}}, f, indent=2)
        f.write("\n")
    md = markdown(runs, rows, meta)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(md)
    with open(os.path.join(args.out, "chart.svg"), "w") as f:
        f.write(svg_chart([r for r in runs if r.label not in VARIANTS]))
    if args.readme:
        update_readme(args.readme, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
