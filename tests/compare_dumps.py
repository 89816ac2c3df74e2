#!/usr/bin/env python3
"""Compares two training runs step by step: the synced pre-clip gradients that `eaglet train
--dump-grads DIR` wrote (every tensor), and the per-step loss, loss_ttt[] and grad_norm of their
metrics.jsonl. Each gradient tensor is judged by two errors, both within the tolerance:
  max-normalised  max|a - b| / max|b|
  row-normalised  max over rows r of max|a_r - b_r| / max(max|b_r|, median_r max|b_r|)
(the second catches a wrong region smaller than tol x the largest entry; NMSE is printed too).
Scalars: |a - b| / max(|b|, 1e-12). Prints one line per step; exit 1 on any mismatch.
usage: compare_dumps.py RUN_A RUN_B --tol TOL   (each RUN: an output_dir with grads/ inside)"""
import glob
import json
import os
import sys

import numpy as np
from safetensors.numpy import load_file


def tensor_errors(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    d, m = np.abs(a - b), np.abs(b)
    scale = max(m.max(), 1e-300)
    rows = (lambda x: x.reshape(x.shape[0], -1)) if a.ndim >= 2 else (lambda x: x.reshape(-1, 1))
    scale_r = rows(m).max(axis=1)
    floor = max(np.sort(scale_r)[(len(scale_r) - 1) // 2], 1e-300)  # torch's median: the lower middle
    row = (rows(d).max(axis=1) / np.maximum(scale_r, floor)).max()
    nmse = (d * d).sum() / max((b * b).sum(), 1e-300)
    return d.max() / scale, row, nmse


def metrics(run):
    out = {}
    for line in open(os.path.join(run, "metrics.jsonl")):
        rec = json.loads(line)
        if not rec.get("eval"):
            out[rec["step"]] = rec
    return out


def main():
    a, b, tol = sys.argv[1], sys.argv[2], float(sys.argv[sys.argv.index("--tol") + 1])
    fa = sorted(glob.glob(os.path.join(a, "grads", "grads_*.safetensors")))
    fb = sorted(glob.glob(os.path.join(b, "grads", "grads_*.safetensors")))
    if not fa or [os.path.basename(f) for f in fa] != [os.path.basename(f) for f in fb]:
        print(f"gradient dumps differ: {len(fa)} in {a}, {len(fb)} in {b}")
        return 1
    ma, mb = metrics(a), metrics(b)
    bad = False
    for f, g in zip(fa, fb):
        step = int(os.path.basename(f)[6:14])
        ta, tb = load_file(f), load_file(g)
        if sorted(ta) != sorted(tb):
            print(f"step {step}: different tensors: {sorted(set(ta) ^ set(tb))}")
            return 1
        worst = (0.0, 0.0, 0.0, "")
        for name in sorted(ta):
            if ta[name].shape != tb[name].shape:
                print(f"step {step}: {name} is {ta[name].shape} vs {tb[name].shape}")
                return 1
            e = tensor_errors(ta[name], tb[name])
            if max(e[0], e[1]) >= max(worst[0], worst[1]):
                worst = (*e, name)
        ra, rb = ma[step], mb[step]
        scal = [("loss", ra["loss"], rb["loss"]), ("grad_norm", ra["grad_norm"], rb["grad_norm"])]
        scal += [(f"loss_ttt[{k}]", x, y) for k, (x, y) in enumerate(zip(ra["loss_ttt"], rb["loss_ttt"]))]
        sworst = max((abs(x - y) / max(abs(y), 1e-12), n) for n, x, y in scal)
        ok = max(worst[0], worst[1]) <= tol and sworst[0] <= tol
        bad |= not ok
        print(f"step {step}: gradients {len(ta)} tensors, worst {worst[3]}: max-normalised "
              f"{worst[0]:.2e}, row-normalised {worst[1]:.2e}, NMSE {worst[2]:.2e}; "
              f"losses/grad_norm worst {sworst[0]:.2e} ({sworst[1]}; grad_norm {ra['grad_norm']:.6g} "
              f"vs {rb['grad_norm']:.6g}); tolerance {tol:g}: {'ok' if ok else 'MISMATCH'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
