#!/usr/bin/env python3
"""Checks of scripts/png_chart.py, the PNG writer behind spec_eval.py --plot (ctest eval_png_chart).

    png_chart_check.py OUT_DIR

Draws a chart of known points (k = 4, three series, one None value), then decodes the file with
its own reader (signature, chunk CRC-32s, IHDR 8-bit RGB of the drawn size, zlib, filter type 0
on every row: the only one the writer uses) and looks at pixels it computes itself from the
frame's pixel edges (x = 0.5..k+0.5 from left to right, y = 0..1.05 from bottom to top):
  - each series' colour at each of its points, none around the None point, nor on the segments
    to it; the solid segment fully coloured, the dashed one with gaps;
  - grid colour on the lines y = 0.2, 0.4, .. 1.0, white between them and at the corners;
  - dark text left of each y grid line (tick labels), under each x tick, in the title band;
    every series colour in the legend; every character of spec_eval's labels in the font;
  - spec_eval.plot_acceptance on a synthetic report: the same checks of its file's points.
Last line: "png_chart: N checks, F failed: PASS|FAIL"; exit 77 without numpy.
"""
import os
import struct
import sys
import tempfile
import zlib

try:
    import numpy as np
except ImportError:
    print("SKIP: numpy is not installed (scripts/setup.sh installs it)")
    sys.exit(77)

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "scripts"))
import png_chart  # noqa: E402

WHITE, GRID, INK = (255, 255, 255), (215, 215, 215), (40, 40, 40)
BLUE, ORANGE, GREEN = (31, 119, 180), (255, 127, 14), (44, 160, 44)
checks = failed = 0


def check(ok, what):
    global checks, failed
    checks += 1
    failed += 0 if ok else 1
    print(("ok   " if ok else "FAIL ") + what, flush=True)


def read_png(path):
    """(H, W, 3) uint8 pixels of an 8-bit RGB PNG; checks the container on the way."""
    data = open(path, "rb").read()
    check(data[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: PNG signature")
    pos, chunks = 8, []
    while pos + 12 <= len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        check(crc == zlib.crc32(kind + body), f"{kind.decode(errors='replace')} chunk CRC-32")
        chunks.append((kind, body))
        pos += 12 + n
    kinds = [k for k, _ in chunks]
    check(pos == len(data) and kinds[0] == b"IHDR" and kinds[-1] == b"IEND", f"chunk layout {kinds}")
    w, h, depth, colour, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    check((depth, colour, comp, filt, interlace) == (8, 2, 0, 0, 0), f"IHDR 8-bit RGB, {w}x{h}")
    raw = zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT"))
    check(len(raw) == h * (1 + 3 * w), f"image data {len(raw)} bytes = {h} rows of 1 + 3 x {w}")
    rows = np.frombuffer(raw, np.uint8).reshape(h, 1 + 3 * w)
    check(not rows[:, 0].any(), "every row has filter type 0")
    return rows[:, 1:].reshape(h, w, 3)


def pixel(frame, x, y):
    """The data point's pixel, computed here from the frame's edges (not by png_chart)."""
    px = frame.left + (x - 0.5) / frame.k * (frame.right - frame.left)
    py = frame.bottom - y / 1.05 * (frame.bottom - frame.top)
    return int(round(px)), int(round(py))


def near(img, px, py, colour, r=2):
    return bool((img[max(py - r, 0):py + r + 1, max(px - r, 0):px + r + 1] == colour).all(-1).any())


def on_segment(img, a, b, colour):
    """How many of 40 samples along the middle 60% of segment a-b (pixels) have the colour."""
    t = np.linspace(0.2, 0.8, 40)
    xs = np.rint(a[0] + t * (b[0] - a[0])).astype(int)
    ys = np.rint(a[1] + t * (b[1] - a[1])).astype(int)
    return int((img[ys, xs] == colour).all(-1).sum())


def check_points(img, frame, series, what):
    for (label, values), colour in zip(series, (BLUE, ORANGE, GREEN)):
        for x, v in enumerate(values, 1):
            if v is not None:
                check(near(img, *pixel(frame, x, v), colour), f"{what}: '{label}' colour at ({x}, {v})")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
    os.makedirs(out, exist_ok=True)
    series = [("given position i-1 accepted", [0.5, 0.8, None, 0.3]),
              ("unconditional", [0.3, 0.4, 0.2, 0.1]),
              ("eaglet acc_ttt (teacher-forced, same text)", [0.7, 0.6, 0.65, 0.9])]
    path = os.path.join(out, "chart.png")
    frame = png_chart.line_chart(path, series, "known points: τ = 1.234", "draft position i",
                                 "acceptance rate", width=640, height=480)
    img = read_png(path)
    check(img.shape == (480, 640, 3), f"decoded size {img.shape[1]}x{img.shape[0]}")
    check_points(img, frame, series, "chart")

    px3, _ = pixel(frame, 3, 0)
    half = (frame.right - frame.left) // frame.k // 2
    band = img[frame.top:frame.bottom, px3 - half + 8:px3 + half - 8]
    check(not (band == BLUE).all(-1).any(), "no blue around x = 3 (None) nor on the segments to it")
    on = on_segment(img, pixel(frame, 1, 0.3), pixel(frame, 2, 0.4), ORANGE)
    check(on == 40, f"solid orange segment (1, 0.3)-(2, 0.4): {on} of 40 samples orange")
    on = on_segment(img, pixel(frame, 1, 0.7), pixel(frame, 2, 0.6), GREEN)
    check(5 < on < 35, f"dashed green segment (1, 0.7)-(2, 0.6): {on} of 40 samples green")

    gx = frame.left + 4  # just inside the frame, left of every point
    for i in range(1, 6):
        _, gy = pixel(frame, 1, 0.2 * i)
        _, my = pixel(frame, 1, 0.2 * i - 0.1)
        check(tuple(img[gy, gx]) == GRID and tuple(img[my, gx]) == WHITE,
              f"grid line at y = {0.2 * i:.1f} (row {gy}), white between at row {my}")
        label = img[gy - 8:gy + 9, frame.left - 50:frame.left - 4]
        check((label == INK).all(-1).any(), f"tick label at y = {0.2 * i:.1f}")
    for x in range(1, frame.k + 1):
        px, _ = pixel(frame, x, 0)
        label = img[frame.bottom + 8:frame.bottom + 28, px - 8:px + 9]
        check((label == INK).all(-1).any(), f"tick label under x = {x}")
    check((img[:frame.top - 4] == INK).all(-1).any(), "title text above the frame")
    corners = [(0, 0), (0, 639), (479, 0), (479, 639)]
    check(all(tuple(img[y, x]) == WHITE for y, x in corners), "white corners")
    legend = img[frame.bottom + 50:]
    check(all((legend == c).all(-1).any() for c in (BLUE, ORANGE, GREEN)), "every series colour in the legend")
    labels = "".join(label for label, _ in series) + "draft position iacceptance rate: τ = 0123456789.(,)"
    check(all(c in png_chart.FONT for c in labels), "every character of the labels in the font")

    try:
        import spec_eval
    except ImportError as e:  # spec_eval needs torch; EAGLET_PYTHON always has it
        check(False, f"import spec_eval: {e}")
        return finish()
    report = {"drafter": "eagle3 runs/x/export", "tau": 1.5, "prompts": 2,
              "acceptance": {"conditional": [0.9, 0.2, None], "unconditional": [0.6, 0.0, 0.0]},
              "simulated": {"acc_ttt": [0.7, 0.5, 0.4]}}
    path = os.path.join(out, "spec_eval.png")
    frame = spec_eval.plot_acceptance(path, report)
    img = read_png(path)
    check_points(img, frame, [("conditional", [0.9, 0.2, None]), ("unconditional", [0.6, 0.0, 0.0]),
                              ("acc_ttt", [0.7, 0.5, 0.4])], "spec_eval.plot_acceptance")
    return finish()


def finish():
    print(f"png_chart: {checks} checks, {failed} failed: {'PASS' if failed == 0 else 'FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
