#!/usr/bin/env python3
"""Loss curves of a training run as a PNG.

  python3 plot_loss.py metrics.json loss.png

Uses matplotlib when it is importable (Debian: python3-matplotlib).  Without
it, draws the same curves with a small built-in rasteriser (no text: the
model card's caption says what is drawn): x = tokens seen, y = loss;
training loss thin, held-out loss thick with dots; ASA red, baseline blue.
"""
import json
import struct
import sys
import zlib

ASA_RGB, FULL_RGB = (200, 30, 30), (30, 60, 200)


def _png(path, w, h, pix):
    raw = b"".join(b"\x00" + bytes(pix[y * w * 3:(y + 1) * w * 3]) for y in range(h))

    def chunk(t, d):
        c = struct.pack(">I", len(d)) + t + d
        return c + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _plot_raw(series, path, w=800, h=500):
    """series: [(xs, ys, rgb, width, dots)]"""
    pix = bytearray(b"\xff" * (w * h * 3))
    L, R, Tm, Bm = 60, 20, 20, 40
    xs_all = [x for s in series for x in s[0]]
    ys_all = [y for s in series for y in s[1]]
    if not xs_all:
        _png(path, w, h, pix)
        return
    x0, x1 = min(xs_all), max(xs_all) or 1
    y0, y1 = min(ys_all), max(ys_all)
    if y1 - y0 < 1e-9:
        y1 = y0 + 1
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad

    def put(x, y, rgb):
        if 0 <= x < w and 0 <= y < h:
            i = (y * w + x) * 3
            pix[i:i + 3] = bytes(rgb)

    def X(x):
        return int(L + (x - x0) / max(1e-12, x1 - x0) * (w - L - R))

    def Y(y):
        return int(h - Bm - (y - y0) / (y1 - y0) * (h - Tm - Bm))

    def line(a, b, c, d, rgb, width):
        n = max(abs(c - a), abs(d - b), 1)
        for k in range(n + 1):
            x, y = a + (c - a) * k // n, b + (d - b) * k // n
            for dx in range(-(width // 2), width - width // 2):
                for dy in range(-(width // 2), width - width // 2):
                    put(x + dx, y + dy, rgb)

    grey = (120, 120, 120)
    line(L, Tm, L, h - Bm, grey, 1)
    line(L, h - Bm, w - R, h - Bm, grey, 1)
    for k in range(11):                              # ticks: tenths of each axis
        line(L + k * (w - L - R) // 10, h - Bm, L + k * (w - L - R) // 10, h - Bm + 5, grey, 1)
        line(L - 5, Tm + k * (h - Tm - Bm) // 10, L, Tm + k * (h - Tm - Bm) // 10, grey, 1)
    for xs, ys, rgb, width, dots in series:
        pts = [(X(x), Y(y)) for x, y in zip(xs, ys)]
        for (a, b), (c, d) in zip(pts, pts[1:]):
            line(a, b, c, d, rgb, width)
        if dots:
            for a, b in pts:
                line(a - 3, b, a + 3, b, rgb, 5)
    _png(path, w, h, pix)


def plot(metrics, path):
    tr = metrics["curve"]["train"]
    va = metrics["curve"]["valid"]
    # the first evaluation (untrained, loss ~ ln V) would flatten the plot
    va_plot = [r for r in va if r[0] > 0] or va
    mtok = 1e6
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
        ax.plot([r[1] / mtok for r in tr], [r[2] for r in tr], color="#c81e1e", lw=0.8, alpha=0.6,
                label="ASA train")
        ax.plot([r[1] / mtok for r in tr], [r[3] for r in tr], color="#1e3cc8", lw=0.8, alpha=0.6,
                label="full attention train")
        ax.plot([r[1] / mtok for r in va_plot], [r[2] for r in va_plot], "o-", color="#c81e1e", lw=2,
                label="ASA held-out")
        ax.plot([r[1] / mtok for r in va_plot], [r[3] for r in va_plot], "o-", color="#1e3cc8", lw=2,
                label="full attention held-out")
        ax.set_xlabel("training tokens (millions)")
        ax.set_ylabel("loss (nats/token)")
        ax.set_title("asa-tiny vs full-attention baseline")
        lo = min([r[2] for r in tr[len(tr) // 10:]] + [r[3] for r in tr[len(tr) // 10:]] +
                 [r[2] for r in va_plot] + [r[3] for r in va_plot] or [0])
        hi = max([r[2] for r in va_plot] + [r[3] for r in va_plot] or [1])
        ax.set_ylim(lo - 0.2, hi + 0.8)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return "matplotlib"
    except ImportError:
        pass
    skip = len(tr) // 10
    _plot_raw([([r[1] for r in tr[skip:]], [r[2] for r in tr[skip:]], ASA_RGB, 1, False),
               ([r[1] for r in tr[skip:]], [r[3] for r in tr[skip:]], FULL_RGB, 1, False),
               ([r[1] for r in va_plot], [r[2] for r in va_plot], ASA_RGB, 3, True),
               ([r[1] for r in va_plot], [r[3] for r in va_plot], FULL_RGB, 3, True)], path)
    return "builtin"


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        m = json.load(f)
    print(plot(m, sys.argv[2]))
