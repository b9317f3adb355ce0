#!/usr/bin/env python3
"""Draws bench/sweep.sh's results as one SVG with two panels: p99 delivery
latency against load, and server CPU per delivery against room size, one
line per server, each point the median of the rounds (bars: min to max).

    python3 bench/plot.py target/sweep.csv BENCHMARKS.svg

Standard library only: the plot is a few dozen lines and circles, not
worth a plotting package.
"""

import csv
import math
import statistics
import sys
from collections import defaultdict

COLOURS = {"secure-chat": "#1f77b4", "go-naive": "#d62728", "go-hub": "#2ca02c"}
W, H = 460, 320  # one panel
LEFT, RIGHT, TOP, BOTTOM = 64, 30, 36, 48


def load(path):
    """(sweep, peer) -> x -> [values], from the rows whose run was ok."""
    data = defaultdict(lambda: defaultdict(list))
    with open(path) as f:
        for row in csv.DictReader(f):
            if row["status"] != "ok":
                continue
            column = "p99_ms" if row["sweep"] == "latency" else "server_cpu_us_per_delivery"
            try:
                value = float(row[column])
            except ValueError:
                continue
            data[(row["sweep"], row["peer"])][float(row["x"])].append(value)
    return data


def ticks(low, high):
    """Powers of ten, and 2 and 5 times them, between low and high."""
    out = []
    exponent = math.floor(math.log10(low))
    while 10**exponent <= high * 1.0001:
        for m in (1, 2, 5):
            v = m * 10**exponent
            if low / 1.0001 <= v <= high * 1.0001:
                out.append(v)
        exponent += 1
    return out


def label(v):
    return f"{v:g}" if v < 1e4 else f"{v:,.0f}"


def panel(svg, x0, data, sweep, title, xlabel, ylabel):
    series = {peer: pts for (s, peer), pts in data.items() if s == sweep}
    xs = [x for pts in series.values() for x in pts]
    ys = [v for pts in series.values() for vals in pts.values() for v in vals]
    if not xs:
        return
    xlo, xhi = min(xs), max(xs)
    ylo, yhi = min(ys) / 1.3, max(ys) * 1.3
    px = lambda x: x0 + LEFT + (math.log10(x) - math.log10(xlo)) / (math.log10(xhi) - math.log10(xlo)) * (W - LEFT - RIGHT)
    py = lambda y: TOP + (math.log10(yhi) - math.log10(y)) / (math.log10(yhi) - math.log10(ylo)) * (H - TOP - BOTTOM)
    svg.append(f'<text x="{x0 + W / 2}" y="20" text-anchor="middle" font-weight="bold">{title}</text>')
    svg.append(f'<rect x="{x0 + LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" fill="none" stroke="#999"/>')
    for x in sorted(set(xs)):
        svg.append(f'<line x1="{px(x):.1f}" y1="{H - BOTTOM}" x2="{px(x):.1f}" y2="{H - BOTTOM + 4}" stroke="#999"/>')
        svg.append(f'<text x="{px(x):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle" font-size="11">{label(x)}</text>')
    for y in ticks(ylo, yhi):
        svg.append(f'<line x1="{x0 + LEFT}" y1="{py(y):.1f}" x2="{x0 + W - RIGHT}" y2="{py(y):.1f}" stroke="#eee"/>')
        svg.append(f'<text x="{x0 + LEFT - 6}" y="{py(y) + 4:.1f}" text-anchor="end" font-size="11">{label(y)}</text>')
    svg.append(f'<text x="{x0 + W / 2}" y="{H - 12}" text-anchor="middle" font-size="12">{xlabel}</text>')
    svg.append(f'<text transform="translate({x0 + 16},{H / 2}) rotate(-90)" text-anchor="middle" font-size="12">{ylabel}</text>')
    for peer in COLOURS:
        if peer not in series:
            continue
        pts = sorted(series[peer].items())
        colour = COLOURS[peer]
        path = " ".join(f"{px(x):.1f},{py(statistics.median(v)):.1f}" for x, v in pts)
        svg.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, v in pts:
            svg.append(f'<line x1="{px(x):.1f}" y1="{py(min(v)):.1f}" x2="{px(x):.1f}" y2="{py(max(v)):.1f}" stroke="{colour}"/>')
            svg.append(f'<circle cx="{px(x):.1f}" cy="{py(statistics.median(v)):.1f}" r="3" fill="{colour}"/>')


def main():
    source, target = sys.argv[1], sys.argv[2]
    data = load(source)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{H + 24}" font-family="sans-serif" font-size="13">',
           f'<rect width="{2 * W}" height="{H + 24}" fill="white"/>']
    panel(svg, 0, data, "latency", "p99 delivery latency, 100 receivers", "lines sent per second", "ms")
    panel(svg, W, data, "fanout", "server CPU per delivery, 5 senders", "clients in the room", "µs")
    for i, (peer, colour) in enumerate(COLOURS.items()):
        x = 80 + i * 160
        svg.append(f'<rect x="{x}" y="{H + 6}" width="14" height="4" fill="{colour}"/>')
        svg.append(f'<text x="{x + 20}" y="{H + 12}" font-size="12">{peer}</text>')
    svg.append("</svg>")
    with open(target, "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
