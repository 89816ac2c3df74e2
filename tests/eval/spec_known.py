#!/usr/bin/env python3
"""Known-value checks of scripts/spec_eval.py's speculative decoding (ctest eval_spec_known).

    spec_known.py OUT_DIR

On a tiny random HF Llama (tests/eval/tiny_target.py: 8 layers, character tokenizer, chat
template), depth k = 4, 3 prompts of the fixture's JSONL (ShareGPT, messages and text lines; a line
without a user turn is skipped):
  - oracle drafter (the target's own greedy continuation): every verification accepts all k, and
    each one not cut by max-new-tokens commits k + 1 tokens (tau_uncut == k + 1 exactly);
  - always-wrong drafter: every verification accepts 0 and commits 1 (tau == 1 exactly), target
    forwards == greedy's;
  - oracle missing with probability 0.3: each verification's accepted count is the longest prefix
    of its proposals equal to the greedy text, its kept count that + 1; 1 < tau < k + 1;
  - a random Eagle3 draft (--random-draft, fp32 and fp64), and an EOS id taken from the greedy text:
    the same prefix rule; generation stops at that EOS;
  - RoPE scaling (llama3, linear) of the draft's inv_freq against transformers' own (1e-6).
Every run's output must equal plain greedy decoding (spec_eval exits 1 otherwise), and target
forwards == verifications + 1 per prompt, greedy forwards == tokens. The first run goes through
the command line, the others through spec_eval.main in this process.
Last line: "spec_known: N checks, F failed: PASS|FAIL"; exit 77 without transformers.
"""
import json
import os
import subprocess
import sys

try:
    import transformers  # noqa: F401
except ImportError:
    print("SKIP: transformers is not installed (scripts/setup.sh installs it)")
    sys.exit(77)

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "scripts"))
sys.path.insert(0, here)
import spec_eval  # noqa: E402
import tiny_target  # noqa: E402

K = 4
checks = failed = 0


def check(ok, what):
    global checks, failed
    checks += 1
    failed += 0 if ok else 1
    print(("ok   " if ok else "FAIL ") + what, flush=True)


def prefix_rule(report):
    """Per uncut round: accepted == longest prefix of the proposals equal to the generated text,
    kept == accepted + 1; counts of forwards. Returns a list of problems."""
    bad = []
    for p in report["per_prompt"]:
        toks, new = p["tokens"], 1
        if p["target_forwards"] != p["verifications"] + 1:
            bad.append(f"line {p['line']}: {p['target_forwards']} forwards, {p['verifications']} verifications")
        for r, (prop, acc, kept, cut) in enumerate(zip(p["proposed"], p["accepted"], p["kept"], p["cut"])):
            if not cut:
                want = 0
                while want < K and new + want < len(toks) and prop[want] == toks[new + want]:
                    want += 1
                if acc != want or kept != acc + 1:
                    bad.append(f"line {p['line']} round {r}: accepted {acc} kept {kept}, expected {want}")
            new += kept
        if new != len(toks):
            bad.append(f"line {p['line']}: rounds commit {new} tokens, output has {len(toks)}")
    if report["greedy_forwards"] != report["tokens"]:
        bad.append(f"greedy forwards {report['greedy_forwards']} != tokens {report['tokens']}")
    return bad


def main(out):
    os.makedirs(out, exist_ok=True)
    target = tiny_target.make(out)
    base = ["--target", target, "--prompts", os.path.join(out, "prompts.jsonl"), "--limit", "3",
            "--depth", str(K), "--max-new-tokens", "30", "--quiet"]

    def run(name, extra, cli=False):
        path = os.path.join(out, name + ".json")
        argv = base + extra + ["--out", path]
        if cli:
            rc = subprocess.run([sys.executable, os.path.join(here, "..", "..", "scripts", "spec_eval.py")]
                                + argv).returncode
        else:
            rc = spec_eval.main(argv)
        check(rc == 0, f"{name}: spec_eval exit {rc} (0: output equals plain greedy)")
        with open(path, encoding="utf-8") as f:
            r = json.load(f)
        check(r["greedy_match"] and r["prompts"] == 3, f"{name}: greedy_match {r['greedy_match']}, "
              f"{r['prompts']} prompts (the line without a user turn skipped)")
        bad = prefix_rule(r)
        check(not bad, f"{name}: accepted = longest greedy prefix, kept = accepted + 1, forward counts"
              + ("" if not bad else ": " + "; ".join(bad[:3])))
        return r

    r = run("oracle", ["--drafter", "oracle", "--ignore-eos"], cli=True)
    rounds = [(a, k, c) for p in r["per_prompt"] for a, k, c in zip(p["accepted"], p["kept"], p["cut"])]
    check(all(a == K for a, _, _ in rounds), f"oracle: every verification accepts all {K}")
    check(r["tau_uncut"] == K + 1 and all(k == K + 1 for _, k, c in rounds if not c)
          and r["cut_verifications"] == 3,
          f"oracle: tau_uncut {r['tau_uncut']} == k + 1 = {K + 1}, one cut verification per prompt")
    check(r["acceptance"]["conditional"] == [1.0] * K, f"oracle: acceptance {r['acceptance']['conditional']}")

    r = run("wrong", ["--drafter", "wrong", "--ignore-eos"])
    check(r["tau"] == 1.0 and r["mean_accepted"] == 0.0 and r["target_forwards"] == r["greedy_forwards"],
          f"wrong: tau {r['tau']} == 1, target forwards {r['target_forwards']} == greedy "
          f"{r['greedy_forwards']}")
    check(r["acceptance"]["unconditional"] == [0.0] * K, "wrong: acceptance 0 at every position")

    r = run("oracle_miss", ["--drafter", "oracle", "--oracle-miss", "0.3", "--ignore-eos"])
    check(1.0 < r["tau"] < K + 1, f"oracle miss 0.3: 1 < tau {r['tau']:.3f} < {K + 1}")
    acc = r["acceptance"]
    check(all(0 < c < 1 for c in acc["conditional"][:2]),
          f"oracle miss 0.3: partial acceptance {[round(x, 3) for x in acc['conditional']]}")

    for dt in ("float32", "float64"):
        r = run(f"random_{dt}", ["--random-draft", "--draft-vocab-size", "64", "--dtype", dt,
                                 "--ignore-eos"])
        check("simulated" in r and len(r["simulated"]["acc_ttt"]) == K,
              f"random {dt}: tau {r['tau']:.3f}, simulated accept_len {r['simulated']['accept_len']:.3f}")

    # An EOS that greedy decoding produces: generation must stop right after it.
    g = json.load(open(os.path.join(out, "wrong.json"), encoding="utf-8"))["per_prompt"][0]["tokens"]
    eos = next((t for t in g[len(g) // 2:] if t not in g[:2]), g[len(g) // 2])
    r = run("eos", ["--random-draft", "--draft-vocab-size", "64", "--eos-ids", str(eos)])
    p = r["per_prompt"][0]
    check(p["tokens"][-1] == eos and eos not in p["tokens"][:-1] and p["cut"][-1],
          f"eos {eos}: first prompt stops at its first EOS ({len(p['tokens'])} tokens), last round cut")
    # RoPE scaling the draft's config may name (eaglet's rope_inv_freq) against transformers' own.
    import torch
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    for rp in ({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
               {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}):
        sizes = {"hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128}
        hf, _ = ROPE_INIT_FUNCTIONS[rp["rope_type"]](
            LlamaConfig(**sizes, rope_parameters=rp, max_position_embeddings=131072), "cpu")
        cfg = spec_eval.DraftConfig(sizes | {"intermediate_size": 1, "vocab_size": 2, "rope_theta": rp["rope_theta"],
                                             "rope_scaling": {k: v for k, v in rp.items() if k != "rope_theta"}})
        e = float(((spec_eval.rope_inv_freq(cfg, torch.float32) - hf).abs() / hf.abs()).max())
        check(e <= 1e-6, f"rope {rp['rope_type']}: inv_freq vs transformers' rel err {e:.1e} (tol 1e-6)")
    print(f"spec_known: {checks} checks, {failed} failed: {'PASS' if failed == 0 else 'FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/spec_known"))
