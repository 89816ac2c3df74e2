#!/usr/bin/env python3
"""Sums up a Chrome trace written by `eaglet bench --profile FILE`: GPU kernel time by kernel
name and by kind (GEMM, attention, elementwise, reduction, copy, NCCL), against the step's span.
usage: scripts/bench/profile_summary.py TRACE.json [TOP]"""
import collections
import json
import re
import sys

# Attention first: flash's kernels carry "cutlass" in their names.
KINDS = [("attention", r"flash|fmha|attention|sdpa"),
         ("gemm", r"gemm|cutlass|sm90_xmma|nvjet|cublas|Kernel2"),
         ("nccl", r"nccl"),
         ("softmax/lse", r"softmax|logsumexp"),
         ("reduction", r"reduce|argmax|norm|sum"),
         ("copy/cast", r"copy|cat|Cat|index|gather|scatter|fill"),
         ("elementwise", r"elementwise|vectorized|unrolled|pointwise")]


def kind(name):
    for k, pat in KINDS:
        if re.search(pat, name):
            return k
    return "other"


def main():
    trace = json.load(open(sys.argv[1]))
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    kernels = [e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    if not kernels:
        print("no GPU kernels in the trace (CUPTI unavailable?)")
        return
    start = min(e["ts"] for e in kernels)
    end = max(e["ts"] + e.get("dur", 0) for e in kernels)
    busy = sum(e.get("dur", 0) for e in kernels)
    print(f"kernels: {len(kernels)}, span {(end - start) / 1e3:.1f} ms, GPU busy {busy / 1e3:.1f} ms")
    by_kind = collections.Counter()
    by_name = collections.Counter()
    count = collections.Counter()
    for e in kernels:
        by_kind[kind(e["name"])] += e.get("dur", 0)
        by_name[e["name"]] += e.get("dur", 0)
        count[e["name"]] += 1
    for k, us in by_kind.most_common():
        print(f"  {k:12s} {us / 1e3:8.1f} ms  {100 * us / busy:5.1f}%")
    print(f"top {top} kernels:")
    for name, us in by_name.most_common(top):
        print(f"  {us / 1e3:8.2f} ms  x{count[name]:<5d} {name[:150]}")
    # Kernel time by the innermost CPU op that launched it (correlation id -> runtime call ->
    # enclosing op on the same thread), one sweep per thread with a stack of open ops.
    launcher = {}
    threads = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "cpu_op":
            threads[e.get("tid")].append((e["ts"], 0, e))
        elif e.get("cat") == "cuda_runtime" and "args" in e:
            threads[e.get("tid")].append((e["ts"], 1, e))
    for items in threads.values():
        items.sort(key=lambda x: (x[0], x[1]))
        stack = []
        for ts, is_rt, e in items:
            while stack and stack[-1]["ts"] + stack[-1].get("dur", 0) < ts:
                stack.pop()
            if is_rt:
                launcher[e["args"].get("correlation")] = stack[-1]["name"] if stack else "?"
            else:
                stack.append(e)
    by_op = collections.Counter()
    for kern in kernels:
        by_op[launcher.get(kern.get("args", {}).get("correlation"), "?")] += kern.get("dur", 0)
    print("kernel time by launching op:")
    for name, us in by_op.most_common(top):
        print(f"  {us / 1e3:8.2f} ms  {name[:120]}")


if __name__ == "__main__":
    main()
