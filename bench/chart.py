#!/usr/bin/env python3
"""Bar charts of the benchmark figures, as one PNG.

    chart.py DATA.json OUT.png

DATA.json: {"title": str, "subtitle": str, "panels": [{"title": str,
"bars": [{"label": str, "value": float|null, "note": str}]}]}. A bar whose
value is null is drawn as "failed" (with its note).

Uses matplotlib when the interpreter has it (Debian: python3-matplotlib);
otherwise draws the same bars with a built-in 5x7 pixel font and writes the
PNG with zlib, so a chart is always produced. bench/run.py calls render();
when its own interpreter lacks matplotlib it runs this file under
/usr/bin/python3, which may have it.
"""

import json
import struct
import sys
import zlib

# Bar colours by contender family (the label's first word).
PALETTE = {
    "raw": (0x88, 0x88, 0x88),
    "nbdkit": (0xE6, 0x8A, 0x00),
    "qemu-nbd": (0x8C, 0x56, 0x4B),
    "standalone": (0x1F, 0x5F, 0xBF),
    "async": (0x2C, 0xA0, 0x2C),
    "memsync": (0x94, 0x67, 0xBD),
    "fullsync": (0xD6, 0x27, 0x28),
    "resync": (0x1F, 0x5F, 0xBF),
    "tcp": (0x88, 0x88, 0x88),
}


def colour(label):
    words = label.lower().replace("hast ", "").split()
    first = words[0] if words else ""
    return PALETTE.get(first, (0x44, 0x44, 0x44))


def have_matplotlib():
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


def fmt(v):
    if v is None:
        return "failed"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def render(data, out):
    """Writes the chart; returns 'matplotlib' or 'builtin' (what drew it)."""
    if have_matplotlib():
        render_matplotlib(data, out)
        return "matplotlib"
    render_builtin(data, out)
    return "builtin"


def render_matplotlib(data, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = data["panels"]
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    most = max(len(p["bars"]) for p in panels)
    height = most * 0.28 + 1.2
    fig, axes = plt.subplots(rows, cols, figsize=(14, height * rows), squeeze=False)
    for i, panel in enumerate(panels):
        ax = axes[i // cols][i % cols]
        labels = [b["label"] for b in panel["bars"]][::-1]
        values = [b["value"] or 0.0 for b in panel["bars"]][::-1]
        colours = [tuple(c / 255 for c in colour(b["label"])) for b in panel["bars"]][::-1]
        ax.barh(range(len(values)), values, color=colours, height=0.75)
        ax.set_ylim(len(values) - most - 0.5, len(values) - 0.5)  # same bar thickness in every panel
        ax.set_yticks(range(len(values)))
        ax.set_yticklabels(labels, fontsize=8)
        ax.set_title(panel["title"], fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
        top = max(values) if values and max(values) > 0 else 1.0
        log = panel.get("log") and top > 0
        if log:
            low = min([v for v in values if v > 0] or [1.0])
            ax.set_xscale("log")
            ax.set_xlim(low / 2, top * 4)
        else:
            ax.set_xlim(0, top * 1.22)
        for y, b in enumerate(panel["bars"][::-1]):
            text = fmt(b["value"])
            if b.get("note"):
                text += f"  {b['note']}"
            x = (b["value"] or 0.0)
            x = x * 1.08 if log else x + top * 0.01
            ax.text(x if x > 0 else (low / 2 if log else 0), y, text, va="center", fontsize=7,
                    color="black" if b["value"] is not None else "red")
        ax.grid(axis="x", alpha=0.3)
    for j in range(len(panels), rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle(data.get("title", ""), fontsize=12)
    if data.get("subtitle"):
        fig.text(0.5, 0.005, data["subtitle"], ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.015, 1, 0.98))
    fig.savefig(out, dpi=90)
    plt.close(fig)


# --- The fallback: a tiny raster renderer ------------------------------------------------

FONT = {
    "A": "01110 10001 10001 11111 10001 10001 10001", "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110", "D": "11110 10001 10001 10001 10001 10001 11110",
    "E": "11111 10000 10000 11110 10000 10000 11111", "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111", "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110", "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001", "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001", "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110", "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101", "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110", "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110", "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010", "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 01010 00100 00100 00100 00100", "Z": "11111 00001 00010 00100 01000 10000 11111",
    "0": "01110 10001 10011 10101 11001 10001 01110", "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111", "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010", "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110", "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110", "9": "01110 10001 10001 01111 00001 00010 01100",
    " ": "00000 00000 00000 00000 00000 00000 00000", ".": "00000 00000 00000 00000 00000 01100 01100",
    ",": "00000 00000 00000 00000 01100 00100 01000", "-": "00000 00000 00000 11111 00000 00000 00000",
    "/": "00001 00010 00010 00100 01000 01000 10000", "(": "00010 00100 01000 01000 01000 00100 00010",
    ")": "01000 00100 00010 00010 00010 00100 01000", ":": "00000 01100 01100 00000 01100 01100 00000",
    "%": "11000 11001 00010 00100 01000 10011 00011", "×": "00000 10001 01010 00100 01010 10001 00000",
    "+": "00000 00100 00100 11111 00100 00100 00000", "=": "00000 00000 11111 00000 11111 00000 00000",
    "_": "00000 00000 00000 00000 00000 00000 11111", "?": "01110 10001 00001 00010 00100 00000 00100",
}


class Canvas:
    def __init__(self, w, h):
        self.w, self.h = w, h
        self.px = bytearray(b"\xff" * (w * h * 3))

    def rect(self, x0, y0, x1, y1, rgb):
        x0, x1 = max(0, int(x0)), min(self.w, int(x1))
        y0, y1 = max(0, int(y0)), min(self.h, int(y1))
        if x1 <= x0:
            return
        row = bytes(rgb) * (x1 - x0)
        for y in range(y0, y1):
            i = (y * self.w + x0) * 3
            self.px[i:i + len(row)] = row

    def text(self, x, y, s, rgb=(0, 0, 0), scale=1):
        for ch in s:
            glyph = FONT.get(ch.upper(), FONT["?"]).split()
            for gy, bits in enumerate(glyph):
                for gx, bit in enumerate(bits):
                    if bit == "1":
                        self.rect(x + gx * scale, y + gy * scale, x + (gx + 1) * scale,
                                  y + (gy + 1) * scale, rgb)
            x += 6 * scale
        return x

    @staticmethod
    def text_width(s, scale=1):
        return len(s) * 6 * scale

    def png(self, path):
        raw = b"".join(b"\x00" + bytes(self.px[y * self.w * 3:(y + 1) * self.w * 3]) for y in range(self.h))

        def chunk(kind, payload):
            c = struct.pack(">I", len(payload)) + kind + payload
            return c + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)

        with open(path, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n")
            f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0)))
            f.write(chunk(b"IDAT", zlib.compress(raw, 6)))
            f.write(chunk(b"IEND", b""))


def render_builtin(data, out):
    panels = data["panels"]
    label_w = max(Canvas.text_width(b["label"]) for p in panels for b in p["bars"]) + 12
    bar_area = 330
    panel_w = label_w + bar_area + 110
    bar_h, gap = 11, 3
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    panel_h = max(len(p["bars"]) for p in panels) * (bar_h + gap) + 30
    width = cols * panel_w + 20
    height = rows * panel_h + 50
    c = Canvas(width, height)
    c.text(10, 8, data.get("title", ""), scale=2)
    if data.get("subtitle"):
        c.text(10, height - 12, data["subtitle"], rgb=(90, 90, 90))
    for i, panel in enumerate(panels):
        ox = 10 + (i % cols) * panel_w
        oy = 34 + (i // cols) * panel_h
        c.text(ox, oy, panel["title"])
        values = [b["value"] for b in panel["bars"] if b["value"] is not None]
        top = max(values) if values and max(values) > 0 else 1.0
        for j, b in enumerate(panel["bars"]):
            y = oy + 14 + j * (bar_h + gap)
            c.text(ox, y + 2, b["label"])
            x0 = ox + label_w
            length = 0 if b["value"] is None else int(bar_area * b["value"] / top)
            c.rect(x0, y, x0 + length, y + bar_h, colour(b["label"]))
            text = fmt(b["value"]) + (f" {b['note']}" if b.get("note") else "")
            c.text(x0 + length + 4, y + 2, text, rgb=(0, 0, 0) if b["value"] is not None else (200, 0, 0))
        c.rect(ox + label_w - 1, oy + 12, ox + label_w, oy + 14 + len(panel["bars"]) * (bar_h + gap), (0, 0, 0))
    c.png(out)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    with open(sys.argv[1]) as f:
        print(render(json.load(f), sys.argv[2]))
