"""The Grafana dashboard's panels drawn from real scrapes, where no Grafana runs.

    python ops/dashboard.py scrape --url http://127.0.0.1:9464/metrics --url http://127.0.0.1:9465/metrics \
        --every 2 --seconds 120 --out var/scrapes.jsonl        # while a demo runs
    python ops/dashboard.py render var/scrapes.jsonl docs/dashboard.png

`render` reads ops/grafana/settleflow.json and evaluates each panel's PromQL over the
scraped samples with a small evaluator for exactly the forms the dashboard uses:
a selector `name{label="v"}`, `rate(...[w])`, `increase(...[w])`, `sum [by (...)] (...)`
and `histogram_quantile(q, ...)` (linear interpolation inside the bucket, as
Prometheus does). Two simplifications, both visible only at a series' start: a
counter series first seen mid-run counts from 0 in the scrape before (Prometheus
would need two samples), and rate/increase do not extrapolate to the window's edges.
The picture is labelled as drawn by this script, not as a Grafana screenshot.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import httpx

DASHBOARD = Path(__file__).parent / "grafana" / "settleflow.json"
Labels = tuple[tuple[str, str], ...]
Series = dict[Labels, list[tuple[float, float]]]


# -- scraping ------------------------------------------------------------------------------
def scrape(urls: list[str], every: float, seconds: float, out: Path) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + seconds
    frames = 0
    with out.open("w") as sink, httpx.Client(timeout=5) as http:
        while time.monotonic() < deadline:
            samples = []
            for url in urls:
                try:
                    body = http.get(url).text
                except httpx.HTTPError:
                    continue  # the process is not up yet or already gone: a gap, as in Prometheus
                samples += exposed_samples(body)
            sink.write(json.dumps({"t": time.time(), "samples": samples}) + "\n")
            sink.flush()
            frames += 1
            time.sleep(every)
    return frames


SAMPLE = re.compile(r'^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def exposed_samples(body: str) -> list[list]:
    """Samples under the names the endpoint wrote (prometheus_client's parser would rename
    Temporal's counters, which carry no _total suffix, to *_total; Prometheus keeps them)."""
    samples = []
    for line in body.splitlines():
        if line and not line.startswith("#") and (m := SAMPLE.match(line)):
            samples.append([m[1], dict(LABEL.findall(m[2] or "")), float(m[3])])
    return samples


# -- evaluating --------------------------------------------------------------------------
class Scrapes:
    def __init__(self, path: Path) -> None:
        self.times: list[float] = []
        self.raw: dict[str, Series] = defaultdict(lambda: defaultdict(list))
        for line in path.read_text().splitlines():
            frame = json.loads(line)
            self.times.append(frame["t"])
            for name, labels, value in frame["samples"]:
                self.raw[name][tuple(sorted(labels.items()))].append((frame["t"], value))

    def select(self, name: str, matchers: dict[str, str], counter: bool) -> Series:
        chosen: Series = {}
        for labels, points in self.raw.get(name, {}).items():
            if all(dict(labels).get(k) == v for k, v in matchers.items()):
                if counter and points[0][0] > self.times[0]:
                    earlier = [t for t in self.times if t < points[0][0]]
                    points = [(earlier[-1], 0.0), *points]  # first seen mid-run: it was 0 before
                chosen[labels] = points
        return chosen

    def evaluate(self, expr: str, counter: bool = False) -> Series:
        expr = expr.strip()
        if m := re.fullmatch(r"histogram_quantile\(\s*([\d.]+)\s*,\s*(.*)\)", expr, re.S):
            return quantile(float(m[1]), self.evaluate(m[2]))
        if m := re.fullmatch(r"sum(?:\s+by\s*\(([^)]*)\))?\s*\((.*)\)", expr, re.S):
            by = [k.strip() for k in (m[1] or "").split(",") if k.strip()]
            return total(self.evaluate(m[2], counter), by)
        if m := re.fullmatch(r"(rate|increase)\((.*)\[(\d+)([smh])\]\)", expr, re.S):
            window = int(m[3]) * {"s": 1, "m": 60, "h": 3600}[m[4]]
            return change(self.evaluate(m[2], counter=True), window, per_second=m[1] == "rate")
        if m := re.fullmatch(r"(\w+)(?:\{(.*)\})?", expr, re.S):
            matchers = dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', m[2] or ""))
            return self.select(m[1], matchers, counter)
        raise ValueError(f"not a form this renderer evaluates: {expr}")


def change(series: Series, window: float, per_second: bool) -> Series:
    result: Series = {}
    for labels, points in series.items():
        out = []
        for t, v in points:
            inside = [(t0, v0) for t0, v0 in points if t - window <= t0 <= t]
            t0, v0 = inside[0]
            if t == t0:
                continue
            delta = v - v0 if v >= v0 else v  # a reset: the counter started again
            out.append((t, delta / (t - t0) if per_second else delta))
        result[labels] = out
    return result


def total(series: Series, by: list[str]) -> Series:
    grouped: dict[Labels, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for labels, points in series.items():
        key = tuple((k, v) for k, v in labels if k in by)
        for t, v in points:
            grouped[key][t] += v
    return {key: sorted(points.items()) for key, points in grouped.items()}


def quantile(q: float, buckets: Series) -> Series:
    grouped: dict[Labels, dict[float, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for labels, points in buckets.items():
        le = float(dict(labels)["le"])
        key = tuple((k, v) for k, v in labels if k != "le")
        for t, v in points:
            grouped[key][t].append((le, v))
    result: Series = {}
    for key, by_time in grouped.items():
        out = []
        for t, counts in sorted(by_time.items()):
            counts.sort()
            observed = counts[-1][1]
            if observed <= 0:
                continue
            rank, lower, below = q * observed, 0.0, 0.0
            for le, cumulative in counts:
                if cumulative >= rank:
                    if math.isinf(le):
                        value = lower
                    else:
                        value = lower + (le - lower) * (rank - below) / max(cumulative - below, 1e-12)
                    out.append((t, value))
                    break
                lower, below = le, cumulative
        result[key] = out
    return result


# -- drawing ------------------------------------------------------------------------------
def render(scrapes_path: Path, out: Path, dashboard_path: Path = DASHBOARD) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dashboard = json.loads(dashboard_path.read_text())
    scrapes = Scrapes(scrapes_path)
    start = scrapes.times[0]
    panels = dashboard["panels"]
    rows = math.ceil(len(panels) / 3)
    plt.style.use("dark_background")
    figure, axes = plt.subplots(rows, 3, figsize=(18, 3.6 * rows), squeeze=False)
    figure.patch.set_facecolor("#111217")
    for ax, panel in zip(axes.flat, panels, strict=False):
        ax.set_facecolor("#181b1f")
        ax.set_title(panel["title"], fontsize=10, loc="left", color="#ccccdc")
        unit = panel["fieldConfig"]["defaults"].get("unit", "")
        drawn = 0
        for target in panel["targets"]:
            for labels, points in sorted(scrapes.evaluate(target["expr"]).items()):
                if not points:
                    continue
                legend = re.sub(r"\{\{(\w+)\}\}", lambda m: dict(labels).get(m[1], ""), target["legendFormat"])
                ax.plot([(t - start) / 60 for t, _ in points], [v for _, v in points], label=legend, linewidth=1.4)
                drawn += 1
        if drawn:
            ax.legend(fontsize=7, loc="upper left", framealpha=0.3)
        else:
            ax.text(0.5, 0.5, "No data", ha="center", va="center", color="#8e8e8e", transform=ax.transAxes)
        ax.set_xlim(0, (scrapes.times[-1] - start) / 60)
        ax.set_xlabel("minutes into the demo run", fontsize=7)
        ax.set_ylabel(unit, fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.15)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    figure.suptitle(
        f"{dashboard['title']}: the panels of ops/grafana/settleflow.json, drawn by ops/dashboard.py "
        f"from {len(scrapes.times)} scrapes of a demo run (not a Grafana screenshot)",
        fontsize=12, color="#ccccdc",
    )  # fmt: skip
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=80, facecolor=figure.get_facecolor())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ops/dashboard.py", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("scrape")
    p.add_argument("--url", action="append", required=True)
    p.add_argument("--every", type=float, default=2.0)
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--out", type=Path, required=True)
    p = verbs.add_parser("render")
    p.add_argument("scrapes", type=Path)
    p.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.verb == "scrape":
        print(f"{scrape(args.url, args.every, args.seconds, args.out)} scrapes in {args.out}")
    else:
        render(args.scrapes, args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
