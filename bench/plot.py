"""Latency CDFs and throughput bars from a benchmark run (matplotlib, dev only)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

COLORS = {"relay": "tab:blue", "floor": "tab:green", "naive": "tab:red"}


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(r["threads"] for r in runs))
    fig, axes = plt.subplots(1, len(settings) + 1, figsize=(6 * (len(settings) + 1), 4.8))
    for ax, threads in zip(axes, settings, strict=False):
        for relay, color in COLORS.items():
            pooled = sorted(
                x
                for r in runs
                if r["threads"] == threads and r["relay"] == relay
                for x in r["latencies_ms"]
            )
            if not pooled:
                continue
            n = len(pooled)
            ax.plot(pooled, [(i + 1) / n for i in range(n)], color=color, label=relay)
        ax.set_xscale("log")
        ax.set_xlabel("latency per message, ms (log scale)")
        ax.set_ylabel("fraction of messages")
        ax.set_title(f"Latency CDF, THREADS={threads} (all rounds)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right")
    ax = axes[-1]
    width = 0.8 / max(1, len(settings))
    relays = [r for r in COLORS if any(run["relay"] == r for run in runs)]
    for offset, threads in enumerate(settings):
        values = [
            statistics.median(
                run["msgs_per_second"]
                for run in runs
                if run["threads"] == threads and run["relay"] == relay
            )
            for relay in relays
        ]
        xs = [i + offset * width for i in range(len(relays))]
        bars = ax.bar(
            xs, values, width, label=f"THREADS={threads}", alpha=0.6 + 0.4 * (offset == 0)
        )
        ax.bar_label(bars, fmt="%.0f")
    ax.set_xticks([i + width * (len(settings) - 1) / 2 for i in range(len(relays))], relays)
    ax.set_ylabel("messages per second (median of rounds)")
    ax.set_title("Throughput")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
