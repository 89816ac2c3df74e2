#!/usr/bin/env python3
"""scripts/spec_eval.py's draft forward against eaglet's own logits (tests/eval/draft_logits.sh).

    compare_draft_logits.py --draft EXPORT --target TARGET_DIR --sample FULL.safetensors
        --logits LOGITS.safetensors [--init-export DIR --seed S]

Checks, each printed as "ok"/"FAIL" with its error and declared tolerance (relative: max |a − b|
over max |b| of the step's logits):
  1. teacher-forced TTT unroll (spec_eval.teacher_forced_logits) vs eaglet's fp64 reference
     unroll (draft_logits), every step: fp32 1e-4, fp64 1e-9;
  2. the inference path (Eagle3Drafter: draft KV cache, extends from target aux states, chained
     proposals, roll-back after a verification) fed the sample's tokens vs the teacher-forced
     unroll: the proposal after row i at depth j equals TTT step j at row i; at several
     boundaries and after roll-backs of 0, 1 and all but one proposal; fp32 1e-4, fp64 1e-9;
  3. draft_to_target (d2t + arange) equals eaglet's VocabMap::draft_to_target;
  4. with --init-export: Eagle3Draft.random(seed) equals eaglet's init_weights (an export of a run
     whose one step did not move the weights) bit for bit after the export's bf16 rounding.
Last line: "draft_logits checks: N checks, F failed: PASS|FAIL"; exit 1 on any failure.
"""
import argparse
import os
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import spec_eval  # noqa: E402

TOL = {torch.float32: 1e-4, torch.float64: 1e-9}


def rel(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--draft", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--sample", required=True)
    ap.add_argument("--logits", required=True)
    ap.add_argument("--init-export")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    embed = load_file(os.path.join(a.target, "model.safetensors"))["model.embed_tokens.weight"]
    sample = load_file(a.sample)
    hs, ids = sample["hidden_states"].float(), sample["input_ids"].long()
    want = load_file(a.logits)
    steps = sum(1 for k in want if k.startswith("logits_step"))
    L = ids.shape[0]
    checks, failed = 0, 0

    def check(ok, what):
        nonlocal checks, failed
        checks += 1
        failed += 0 if ok else 1
        print(("ok   " if ok else "FAIL ") + what)

    for dtype in (torch.float32, torch.float64):
        tol, name = TOL[dtype], str(dtype).replace("torch.", "")
        draft = spec_eval.Eagle3Draft.load(a.draft, embed, dtype)
        tf, _ = spec_eval.teacher_forced_logits(draft, hs, ids, steps)
        for k in range(steps):
            e = rel(tf[k], want[f"logits_step{k}"])
            check(e <= tol, f"{name} teacher-forced step {k} vs eaglet: rel err {e:.2e} (tol {tol:g})")
        if dtype == torch.float32:
            check(torch.equal(draft.draft_to_target, want["draft_to_target"]),
                  "draft_to_target (d2t + arange) equals eaglet's VocabMap::draft_to_target")
        # The inference path fed the sample's own tokens: proposal j after extending up to row i
        # is TTT step j at row i. Rounds at each boundary: extend, propose `steps` (forced), then
        # "accept" a of them and extend over a + 1 rows, as a verification does.
        worst = 0.0
        rounds = 0
        for start in (1, 5, L // 2):
            drafter = spec_eval.Eagle3Drafter(draft)
            m = start  # rows 0..m−1 extended: the committed tokens are ids[0..m]
            drafter.extend(ids[:m + 1].tolist(), hs[:m])
            for a_acc in (0, steps - 1, 1, 0):
                if m + steps >= L:
                    break
                drafter.propose(ids[:m + 1].tolist(), steps, forced=ids[m + 1:m + 1 + steps].tolist())
                for j, z in enumerate(drafter.step_logits):
                    worst = max(worst, rel(z[0], tf[j][m - 1]))
                rounds += 1
                n = a_acc + 1
                drafter.extend(ids[:m + n + 1].tolist(), hs[m:m + n])
                m += n
        check(rounds >= 6 and worst <= tol,
              f"{name} incremental drafting (KV cache, roll-backs) vs teacher-forced: {rounds} rounds, "
              f"max rel err {worst:.2e} (tol {tol:g})")

    if a.init_export:
        got = load_file(os.path.join(a.init_export, "model.safetensors"))
        cfg = spec_eval.Eagle3Draft.load(a.init_export, embed).cfg
        mine = spec_eval.Eagle3Draft.random(cfg, embed, got["d2t"], a.seed)
        same = [n for n in spec_eval.TRAINABLE if torch.equal(mine.w[n].to(torch.bfloat16), got[n])]
        check(len(same) == len(spec_eval.TRAINABLE),
              f"--random-draft seed {a.seed} equals eaglet's init_weights (bf16): "
              f"{len(same)}/{len(spec_eval.TRAINABLE)} tensors")
    print(f"draft_logits checks: {checks} checks, {failed} failed: {'PASS' if failed == 0 else 'FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
