#!/usr/bin/env python3
"""Plot an eaglet run's metrics.jsonl into one PNG.

    python scripts/plot_metrics.py runs/demo/metrics.jsonl -o runs/demo/metrics.png

Panels: loss, accuracy per TTT step, simulated accept length, tokens/s, learning rate and
gradient norm. Training lines are drawn raw (faint) and as a moving average; held-out
evaluation lines ("eval": true, written every training.eval_interval steps and at the end) are
drawn as markers in the same colours. When a run was resumed from an earlier checkpoint, the
steps it repeated appear twice in the file: the later line of each step wins.

Needs matplotlib (`python -m pip install matplotlib`); nothing else beyond the standard library.
"""
import argparse
import json
import os
import sys


def read_metrics(path):
    """Returns (train, evals, bad): lists of dicts sorted by step, and the count of bad lines."""
    train, evals, bad = {}, {}, 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
                step = int(rec["step"])
            except (ValueError, KeyError, TypeError):
                bad += 1  # e.g. a last line cut short by a killed job
                continue
            (evals if rec.get("eval") else train)[step] = rec
    return ([train[s] for s in sorted(train)], [evals[s] for s in sorted(evals)], bad)


def moving_average(values, window):
    if window <= 1:
        return list(values)
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def column(records, key):
    """(steps, values) of the records that have `key` as a number."""
    steps, values = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            steps.append(r["step"])
            values.append(float(v))
    return steps, values


def ttt_columns(records, key):
    """[(steps, values)] per TTT step k of the list-valued `key` (acc_ttt, loss_ttt)."""
    width = max((len(r.get(key) or []) for r in records), default=0)
    cols = []
    for k in range(width):
        steps, values = [], []
        for r in records:
            vals = r.get(key) or []
            if k < len(vals) and isinstance(vals[k], (int, float)):
                steps.append(r["step"])
                values.append(float(vals[k]))
        cols.append((steps, values))
    return cols


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("metrics", help="<output_dir>/metrics.jsonl of an eaglet train run")
    ap.add_argument("-o", "--out", help="PNG to write (default: metrics.png beside the input)")
    ap.add_argument("--smooth", type=int, default=0,
                    help="moving-average window in steps (default: steps/50, at least 1)")
    ap.add_argument("--title", help="figure title (default: the input's folder)")
    args = ap.parse_args()

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit(f"plot_metrics.py: the Python package 'matplotlib' is missing in {sys.executable}; "
                 f"install it with: {sys.executable} -m pip install matplotlib")

    if not os.path.isfile(args.metrics):
        sys.exit(f"plot_metrics.py: {args.metrics}: no such file (eaglet train writes "
                 "<output_dir>/metrics.jsonl)")
    train, evals, bad = read_metrics(args.metrics)
    if not train and not evals:
        sys.exit(f"plot_metrics.py: {args.metrics}: no metrics lines")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.metrics)), "metrics.png")
    window = args.smooth if args.smooth > 0 else max(1, len(train) // 50)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    (ax_loss, ax_acc, ax_tau), (ax_tps, ax_lr, ax_grad) = axes

    def train_line(ax, steps, values, color, label):
        if not steps:
            return
        if window > 1:
            ax.plot(steps, values, color=color, alpha=0.2, linewidth=0.8)
            ax.plot(steps, moving_average(values, window), color=color, linewidth=1.5, label=label)
        else:
            ax.plot(steps, values, color=color, linewidth=1.2, label=label)

    def eval_points(ax, steps, values, color, label):
        if steps:
            ax.plot(steps, values, color=color, marker="o", linestyle="--", linewidth=1,
                    markersize=5, label=label)

    # Loss: the weighted total (what is optimised).
    s, v = column(train, "loss")
    train_line(ax_loss, s, v, colors[0], "train")
    s, v = column(evals, "loss")
    eval_points(ax_loss, s, v, colors[1], "eval (held out)")
    ax_loss.set_title("loss (weighted over TTT steps)")

    # Accuracy per TTT step: train as lines, eval as markers, one colour per step.
    for k, (s, v) in enumerate(ttt_columns(train, "acc_ttt")):
        train_line(ax_acc, s, v, colors[k % len(colors)], f"train k={k}")
    for k, (s, v) in enumerate(ttt_columns(evals, "acc_ttt")):
        eval_points(ax_acc, s, v, colors[k % len(colors)], f"eval k={k}")
    ax_acc.set_title("accuracy per TTT step k")
    ax_acc.set_ylim(0, 1)

    s, v = column(train, "accept_len")
    train_line(ax_tau, s, v, colors[0], "train")
    s, v = column(evals, "accept_len")
    eval_points(ax_tau, s, v, colors[1], "eval (held out)")
    ax_tau.set_title("simulated accept length  Σ_k Π_{j≤k} acc_j")

    s, v = column(train, "tokens_per_s")
    train_line(ax_tps, s, v, colors[2], "tokens/s (all replicas)")
    ax_tps.set_title("throughput (tokens/s)")

    s, v = column(train, "lr")
    train_line(ax_lr, s, v, colors[3], None)
    ax_lr.set_title("learning rate")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))

    s, v = column(train, "grad_norm")
    train_line(ax_grad, s, v, colors[4], "grad norm (before clipping)")
    skipped = [r["step"] for r in train if r.get("skipped")]
    if skipped:
        ax_grad.scatter(skipped, [0] * len(skipped), color="red", marker="x",
                        label=f"skipped steps ({len(skipped)})", zorder=3)
    ax_grad.set_title("gradient norm")

    for ax in axes.flat:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")

    title = args.title or os.path.basename(os.path.dirname(os.path.abspath(args.metrics)))
    last = train[-1] if train else evals[-1]
    note = f"{len(train)} train steps (last {last['step']}), {len(evals)} evals"
    if window > 1:
        note += f", moving average over {window} steps"
    fig.suptitle(f"{title}: {note}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"plot_metrics.py: {note} -> {out}")
    if bad:
        print(f"plot_metrics.py: skipped {bad} unreadable line(s) in {args.metrics}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
