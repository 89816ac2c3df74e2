"""A dependency-free line chart as PNG: numpy draws the raster, zlib and struct write the file.

spec_eval.py draws its per-position acceptance with it, so `--plot` needs nothing beyond numpy.
One chart kind only: x = 1..k (positions), y in [0, 1] with grid lines every 0.2, up to
len(STYLES) series (None values not drawn), a legend below the axes, text in a 5x7 bitmap font.

Geometry (tests/eval/png_chart_check.py recomputes it from Frame's edges): the x axis spans
0.5..k+0.5 and the y axis 0..Y_TOP between the frame's left/right and bottom/top pixel edges.
"""

import struct
import zlib
from collections import namedtuple

import numpy as np

WHITE, INK, GRID = (255, 255, 255), (40, 40, 40), (215, 215, 215)
Y_TOP = 1.05  # a little headroom so markers at 1.0 are not cut by the frame

# Series styles in the order series are given: colour (matplotlib's tab10), marker, dashed line.
Style = namedtuple("Style", "colour marker dashed")
STYLES = [Style((31, 119, 180), "circle", False),
          Style((255, 127, 14), "square", False),
          Style((44, 160, 44), "cross", True)]

# Pixel edges of the data area: x = 0.5 at left, k + 0.5 at right, y = 0 at bottom, Y_TOP at top.
Frame = namedtuple("Frame", "left top right bottom k")

# --- a 5x7 bitmap font: one row per entry, bit 4 is the leftmost column; an 8th row is a descender

FONT = {
    " ": (0, 0, 0, 0, 0, 0, 0), "?": (0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04),
    ".": (0, 0, 0, 0, 0, 0x0C, 0x0C), ",": (0, 0, 0, 0, 0x0C, 0x04, 0x08),
    ":": (0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0), "=": (0, 0, 0x1F, 0, 0x1F, 0, 0),
    "(": (0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02), ")": (0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08),
    "-": (0, 0, 0, 0x1F, 0, 0, 0), "+": (0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0),
    "/": (0, 0x01, 0x02, 0x04, 0x08, 0x10, 0), "_": (0, 0, 0, 0, 0, 0, 0x1F),
    "'": (0x04, 0x04, 0x08, 0, 0, 0, 0), "%": (0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03),
    "τ": (0, 0, 0x1F, 0x04, 0x04, 0x05, 0x02),
    "0": (0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E), "1": (0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "2": (0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F), "3": (0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E),
    "4": (0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02), "5": (0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E),
    "6": (0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E), "7": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08),
    "8": (0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E), "9": (0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C),
    "A": (0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11), "B": (0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E),
    "C": (0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E), "D": (0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C),
    "E": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F), "F": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10),
    "G": (0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F), "H": (0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11),
    "I": (0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E), "J": (0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C),
    "K": (0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11), "L": (0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F),
    "M": (0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11), "N": (0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11),
    "O": (0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E), "P": (0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10),
    "Q": (0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D), "R": (0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11),
    "S": (0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E), "T": (0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04),
    "U": (0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E), "V": (0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04),
    "W": (0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A), "X": (0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11),
    "Y": (0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04), "Z": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F),
    "a": (0, 0, 0x0E, 0x01, 0x0F, 0x11, 0x0F), "b": (0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E),
    "c": (0, 0, 0x0E, 0x10, 0x10, 0x11, 0x0E), "d": (0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F),
    "e": (0, 0, 0x0E, 0x11, 0x1F, 0x10, 0x0E), "f": (0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08),
    "g": (0, 0, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x0E), "h": (0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11),
    "i": (0x04, 0, 0x0C, 0x04, 0x04, 0x04, 0x0E), "j": (0x02, 0, 0x06, 0x02, 0x02, 0x02, 0x12, 0x0C),
    "k": (0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12), "l": (0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "m": (0, 0, 0x1A, 0x15, 0x15, 0x15, 0x15), "n": (0, 0, 0x16, 0x19, 0x11, 0x11, 0x11),
    "o": (0, 0, 0x0E, 0x11, 0x11, 0x11, 0x0E), "p": (0, 0, 0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10),
    "q": (0, 0, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x01), "r": (0, 0, 0x16, 0x19, 0x10, 0x10, 0x10),
    "s": (0, 0, 0x0F, 0x10, 0x0E, 0x01, 0x1E), "t": (0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06),
    "u": (0, 0, 0x11, 0x11, 0x11, 0x13, 0x0D), "v": (0, 0, 0x11, 0x11, 0x11, 0x0A, 0x04),
    "w": (0, 0, 0x11, 0x11, 0x15, 0x15, 0x0A), "x": (0, 0, 0x11, 0x0A, 0x04, 0x0A, 0x11),
    "y": (0, 0, 0x11, 0x11, 0x11, 0x0F, 0x01, 0x0E), "z": (0, 0, 0x1F, 0x02, 0x04, 0x08, 0x1F),
}
FONT["−"] = FONT["-"]  # U+2212, as in "i−1"


def text_mask(text, scale):
    """Boolean raster of text: 6 columns (5 + a gap) and 8 rows per glyph, scaled; unknown
    characters are drawn as '?'."""
    mask = np.zeros((8, 6 * len(text)), dtype=bool)
    for i, ch in enumerate(text):
        for r, bits in enumerate(FONT.get(ch, FONT["?"])):
            for c in range(5):
                mask[r, 6 * i + c] = bool(bits >> (4 - c) & 1)
    return np.kron(mask[:, :-1], np.ones((scale, scale), dtype=bool)).astype(bool)


def blit(img, mask, x, y, colour):
    """Paints mask's true pixels with its top-left corner at (x, y), clipped to the image."""
    h, w = mask.shape
    y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + h, img.shape[0]), min(x + w, img.shape[1])
    if y0 < y1 and x0 < x1:
        img[y0:y1, x0:x1][mask[y0 - y:y1 - y, x0 - x:x1 - x]] = colour


def draw_text(img, text, x, y, colour=INK, scale=2, align="left", vertical=False):
    """Text with its top at y (vertical: reads bottom to top, centred on y, its left at x);
    align says where x is on a horizontal text: its left, centre or right end."""
    mask = text_mask(text, scale)
    if vertical:
        mask = np.rot90(mask)
        blit(img, mask, x, y - mask.shape[0] // 2, colour)
        return
    shift = {"left": 0, "center": mask.shape[1] // 2, "right": mask.shape[1]}[align]
    blit(img, mask, x - shift, y, colour)


def fitting_scale(text, room):
    """2 where the text fits in room pixels at that scale, else 1 (and it may still be cut)."""
    return 2 if text_mask(text, 2).shape[1] <= room else 1


def draw_line(img, x0, y0, x1, y1, colour, width=2, dashed=False):
    """A straight line sampled every half pixel and stamped width x width; dashed: 8 on, 5 off."""
    length = max(abs(x1 - x0), abs(y1 - y0), 1)
    t = np.linspace(0.0, 1.0, int(2 * length) + 2)
    if dashed:
        t = t[(t * np.hypot(x1 - x0, y1 - y0)) % 13 < 8]
    xs = np.rint(x0 + t * (x1 - x0)).astype(int)
    ys = np.rint(y0 + t * (y1 - y0)).astype(int)
    for dy in range(-(width // 2), width - width // 2):
        for dx in range(-(width // 2), width - width // 2):
            ok = (ys + dy >= 0) & (ys + dy < img.shape[0]) & (xs + dx >= 0) & (xs + dx < img.shape[1])
            img[ys[ok] + dy, xs[ok] + dx] = colour


def draw_marker(img, x, y, kind, colour, r=5):
    """A filled circle or square, or a cross, centred on pixel (x, y)."""
    if kind == "cross":
        draw_line(img, x - r, y - r, x + r, y + r, colour, width=3)
        draw_line(img, x - r, y + r, x + r, y - r, colour, width=3)
        return
    d = np.arange(-r, r + 1)
    mask = np.ones((2 * r + 1, 2 * r + 1), dtype=bool)
    if kind == "circle":
        mask = d[:, None] ** 2 + d[None, :] ** 2 <= r * r
    blit(img, mask, x - r, y - r, colour)


def to_pixel(frame, x, y):
    """Pixel of data point (x, y): x in 0.5..k+0.5, y in 0..Y_TOP across the frame."""
    px = frame.left + (x - 0.5) / frame.k * (frame.right - frame.left)
    py = frame.bottom - y / Y_TOP * (frame.bottom - frame.top)
    return int(round(px)), int(round(py))


def png_bytes(img):
    """An 8-bit RGB PNG of an (H, W, 3) uint8 array: signature, IHDR, one IDAT (every row filter 0,
    none), IEND; each chunk is length, type, data, CRC-32 of type + data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    h, w, _ = img.shape
    rows = np.concatenate([np.zeros((h, 1), np.uint8), img.astype(np.uint8).reshape(h, 3 * w)], axis=1)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), 9)) + chunk(b"IEND", b""))


def line_chart(path, series, title, xlabel, ylabel, width=760, height=520):
    """Writes the chart to path. series: [(label, values)] in STYLES order, values for x = 1..k
    (None: not drawn, nor the segments to it). Returns the Frame, for tests."""
    if not 1 <= len(series) <= len(STYLES):
        raise ValueError(f"png_chart: {len(series)} series; 1 to {len(STYLES)} can be drawn")
    k = max(len(values) for _, values in series)
    img = np.full((height, width, 3), WHITE, dtype=np.uint8)
    frame = Frame(left=90, top=48, right=width - 30, bottom=height - 80 - 24 * len(series), k=k)

    for i in range(6):  # grid and y ticks every 0.2
        _, py = to_pixel(frame, 1, 0.2 * i)
        draw_line(img, frame.left, py, frame.right, py, GRID, width=1)
        draw_text(img, f"{0.2 * i:.1f}", frame.left - 10, py - 7, align="right")
    for x in range(1, k + 1):
        px, _ = to_pixel(frame, x, 0)
        draw_line(img, px, frame.bottom, px, frame.bottom + 5, INK, width=1)
        draw_text(img, str(x), px, frame.bottom + 10, align="center")
    for x0, y0, x1, y1 in [(frame.left, frame.top, frame.right, frame.top),
                           (frame.left, frame.bottom, frame.right, frame.bottom),
                           (frame.left, frame.top, frame.left, frame.bottom),
                           (frame.right, frame.top, frame.right, frame.bottom)]:
        draw_line(img, x0, y0, x1, y1, INK, width=1)

    for (_, values), style in zip(series, STYLES):
        points = [None if v is None else to_pixel(frame, x + 1, v) for x, v in enumerate(values)]
        for a, b in zip(points, points[1:]):
            if a and b:
                draw_line(img, *a, *b, style.colour, dashed=style.dashed)
        for p in points:
            if p:
                draw_marker(img, *p, style.marker, style.colour)

    draw_text(img, title, width // 2, 14, scale=fitting_scale(title, width - 20), align="center")
    draw_text(img, xlabel, (frame.left + frame.right) // 2, frame.bottom + 34, align="center")
    draw_text(img, ylabel, 16, (frame.top + frame.bottom) // 2, vertical=True)
    for i, ((label, _), style) in enumerate(zip(series, STYLES)):  # legend, one row per series
        y = frame.bottom + 74 + 24 * i
        draw_line(img, frame.left, y, frame.left + 40, y, style.colour, dashed=style.dashed)
        draw_marker(img, frame.left + 20, y, style.marker, style.colour)
        scale = fitting_scale(label, width - frame.left - 54)
        draw_text(img, label, frame.left + 54, y - 7 + (2 - scale) * 4, scale=scale)

    with open(path, "wb") as f:
        f.write(png_bytes(img))
    return frame


if __name__ == "__main__":  # an example (docs/GUIDE.md's SmolLM2 run): png_chart.py OUT.png
    import sys
    line_chart(sys.argv[1] if len(sys.argv) > 1 else "png_chart_example.png",
               [("given position i-1 accepted", [0.232, 0.219, 0.214, 0.0, None, None, None]),
                ("unconditional", [0.232, 0.051, 0.011, 0.0, 0.0, 0.0, 0.0]),
                ("eaglet acc_ttt (teacher-forced, same text)",
                 [0.249, 0.166, 0.157, 0.122, 0.128, 0.107, 0.119])],
               "eagle3 runs/smol/export: τ = 1.268 (depth 7, 5 prompts)",
               "draft position i", "acceptance rate")
