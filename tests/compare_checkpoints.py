#!/usr/bin/env python3
"""Compares the tensors of two safetensors files: exact (bit for bit) or within a relative tolerance
(max |a - b| / max |b| per tensor). Prints the worst tensor; exit 1 on a mismatch.
usage: compare_checkpoints.py A B (--exact | --rel TOL)"""
import sys

from safetensors.numpy import load_file


def main():
    a, b, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    ta, tb = load_file(a), load_file(b)
    if sorted(ta) != sorted(tb):
        print(f"different tensor names: {sorted(set(ta) ^ set(tb))}")
        return 1
    worst, worst_name = 0.0, ""
    for name in sorted(ta):
        x, y = ta[name], tb[name]
        if x.shape != y.shape or x.dtype != y.dtype:
            print(f"{name}: {x.shape} {x.dtype} vs {y.shape} {y.dtype}")
            return 1
        if mode == "--exact":
            if x.tobytes() != y.tobytes():
                print(f"{name}: not bit-identical")
                return 1
            continue
        xf, yf = x.astype("float64"), y.astype("float64")
        scale = max(abs(yf).max(), 1e-30)
        rel = abs(xf - yf).max() / scale
        if rel > worst:
            worst, worst_name = rel, name
    if mode == "--exact":
        print(f"{len(ta)} tensors bit-identical")
        return 0
    tol = float(sys.argv[4])
    print(f"{len(ta)} tensors, worst relative difference {worst:.3e} ({worst_name}), tolerance {tol:g}")
    return 0 if worst <= tol else 1


if __name__ == "__main__":
    sys.exit(main())
