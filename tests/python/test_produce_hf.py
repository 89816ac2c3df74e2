#!/usr/bin/env python3
"""Fixture and reference check for scripts/produce_hf.py (driven by tests/mpi/produce_hf_checks.sh).

  prepare OUT     a tiny random Llama target, tied (OUT/tied) and untied (OUT/untied), each with a
                  word-level tokenizer made here (no hub) whose chat template marks the assistant
                  turns with {% generation %}, and OUT/prompts.jsonl in every accepted format; then
                  unit checks of produce_hf's helpers (record parsing, aux layer ids, RoPE
                  settings, a template that is not prefix-stable)
  check OUT --run VARIANT:AUX:NEW:EXPECT ...
                  recomputes every sample of OUT/VARIANT.run/store from the prompts, independently
                  of the producer: the conversation (greedy generation done again with
                  model.generate), its token ids and loss mask by apply_chat_template(
                  return_assistant_tokens_mask=True), the aux hidden states by forward hooks on the
                  decoder layers' outputs, the last hidden state by a hook on the final norm; then
                  compares every shard file byte for byte (bf16 after round-to-nearest-even), the
                  manifest line, and the head folder OUT/VARIANT.run/target's tensors and tie flag
                  against the model's

Each prints "test_produce_hf <command>: ... PASS" or the failures and exits 1.
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch

WORDS = ("the cat sat on a mat . what is two plus three ? it is five . tell me about the sea and "
         "the sky : blue , wide and deep ! you are a helpful assistant who answers briefly user "
         "system why do birds sing at dawn because light wakes them early").split()
# Word-level vocabulary: the words above plus filler words, ~300 tokens in all.
FILLER = [f"w{i:03d}" for i in range(240)]
SPECIALS = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
NUM_LAYERS = 8
MAX_SEQ_LENGTH = 96


def prompts():
    """One line per accepted input format; line 3 has no assistant turn, line 4 is cut."""
    return [
        {"conversations": [
            {"from": "system", "value": "you are a helpful assistant"},
            {"from": "human", "value": "what is two plus three ?"},
            {"from": "gpt", "value": "it is five ."},
            {"from": "human", "value": "why do birds sing at dawn ?"},
            {"from": "gpt", "value": "because light wakes them early ."}]},
        {"messages": [{"role": "user", "content": "tell me about the sea"},
                      {"role": "assistant", "content": "the sea is blue , wide and deep !"}]},
        {"text": "the cat sat on a mat . the sky is blue ."},
        {"conversations": [{"from": "human", "value": "what is the sky ?"}]},
        {"messages": [{"role": "user", "content": " ".join(FILLER[:40])},
                      {"role": "assistant", "content": " ".join(FILLER[40:120])}]},
        {"messages": [{"role": "user", "content": "w001 w002 w003"},
                      {"role": "assistant", "content": "w004 w005 . w006 w007 w008 ?"},
                      {"role": "user", "content": "w009"},
                      {"role": "assistant", "content": "w010 w011"}]},
    ]


def prepare(out):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.train_from_iterator([" ".join(WORDS), " ".join(FILLER)],
                             trainers.WordLevelTrainer(special_tokens=SPECIALS))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>",
                                  bos_token="<|im_start|>", eos_token="<|im_end|>")
    tok.chat_template = TEMPLATE
    for tied in (True, False):
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                          num_hidden_layers=NUM_LAYERS, num_attention_heads=4,
                          num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                          rms_norm_eps=1e-5, tie_word_embeddings=tied,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id)
        torch.manual_seed(1 if tied else 2)
        model = LlamaForCausalLM(cfg)
        with torch.no_grad():  # larger weights than the default init: less uniform predictions
            for w in model.parameters():
                if w.dim() == 2:
                    w.mul_(4)
        folder = os.path.join(out, "tied" if tied else "untied")
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    with open(os.path.join(out, "prompts.jsonl"), "w") as f:
        for record in prompts():
            f.write(json.dumps(record) + "\n\n")  # blank lines are not counted
    print(f"test_produce_hf prepare: {out}/tied, {out}/untied ({len(tok)} tokens), prompts.jsonl")
    return unit_checks(tok)


def unit_checks(tok):
    """produce_hf's helpers on inputs the end-to-end runs do not reach."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
    import produce_hf as ph

    failures = []

    def expect(name, got, want):
        if got != want:
            failures.append(f"{name}: got {got!r}, expected {want!r}")

    def refused(name, fn, *args):
        try:
            fn(*args)
        except (ph.BadSample, SystemExit) as e:
            return str(e)
        failures.append(f"{name}: accepted")
        return ""

    expect("sharegpt", ph.parse_record({"conversations": [
        {"from": "gpt", "value": "orphan"}, {"from": "system", "value": "s"},
        {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}),
        ("chat", [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                  {"role": "assistant", "content": "a"}]))
    expect("text", ph.parse_record({"text": "t"}), ("text", "t"))
    msg = refused("unknown role", ph.parse_record, {"messages": [{"role": "tool", "content": "x"}]})
    expect("unknown role message", msg.startswith("turn 0: expected a role"), True)
    refused("no turns", ph.parse_record, {"conversations": []})
    refused("only assistant turns", ph.parse_record, {"messages": [{"role": "assistant", "content": "a"}]})
    expect("default aux layers, 30 layers (SmolLM2)", ph.aux_layer_ids(None, 30), [1, 14, 26])
    expect("default aux layers, 32 layers (Llama 3.1 8B)", ph.aux_layer_ids(None, 32), [1, 15, 28])
    expect("explicit aux layers, sorted", ph.aux_layer_ids("5,0,2", 8), [0, 2, 5])
    refused("default aux layers collide at 6 layers", ph.aux_layer_ids, None, 6)
    refused("aux layer past N-2", ph.aux_layer_ids, "0,1,7", 8)
    refused("two aux layers", ph.aux_layer_ids, "0,1", 8)

    class Cfg:
        pass

    v5, v4 = Cfg(), Cfg()
    v5.rope_parameters = {"rope_theta": 5e5, "rope_type": "llama3", "factor": 8.0}
    v4.rope_theta, v4.rope_scaling = 1e6, None
    expect("rope, transformers 5", ph.rope_settings(v5), (5e5, {"rope_type": "llama3", "factor": 8.0}))
    expect("rope, transformers 4", ph.rope_settings(v4), (1e6, None))

    # A template that renders the last turn differently from earlier ones (as templates that drop
    # earlier reasoning do): the assistant turn cannot be located and the sample is refused.
    saved = tok.chat_template
    tok.chat_template = ("{% for m in messages %}{{ m['content'] }}"
                         "{% if loop.last %} end{% endif %}{% endfor %}")
    refused("template that is not prefix-stable", ph.chat_tokens, tok,
            [{"role": "user", "content": "what"}, {"role": "assistant", "content": "it"},
             {"role": "user", "content": "why"}])
    tok.chat_template = saved

    for f in failures:
        print("FAIL", f)
    print(f"test_produce_hf unit: {len(failures)} failed: {'PASS' if not failures else 'FAIL'}")
    return 0 if not failures else 1


# --- the reference ---------------------------------------------------------------------------------
def bf16_bits(t):
    return t.detach().to(torch.bfloat16).contiguous().view(torch.int16).numpy().view(np.uint16)


def pack(mask):
    runs, value, n = [], 0, 0
    for v in mask:
        if v == value:
            n += 1
        else:
            runs.append(n)
            value, n = v, 1
    runs.append(n)
    return ",".join(map(str, runs))


def greedy(model, tok, ids, max_new, limit):
    budget = min(max_new, limit - len(ids))
    if budget <= 0:
        return []
    x = torch.tensor([ids])
    out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=budget,
                         do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return out[0, len(ids):].tolist()


def reference_tokens(record, model, tok, max_new):
    """(ids, mask) of a prompt line; max_new > 0: the model answers (greedy), as --generate does."""
    if "text" in record:
        ids = tok(record["text"])["input_ids"]
        if not max_new:
            return ids, [1] * len(ids)
        new = greedy(model, tok, ids, max_new, MAX_SEQ_LENGTH)
        return ids + new, [0] * len(ids) + [1] * len(new)
    roles = {"human": "user", "gpt": "assistant"}
    turns = record.get("conversations") or record["messages"]
    messages = [{"role": roles.get(t.get("from"), t.get("from", t.get("role"))),
                 "content": t.get("value", t.get("content"))} for t in turns]
    if max_new:
        answered = []
        for m in messages + ([] if messages[-1]["role"] == "assistant" else [{"role": "assistant"}]):
            if m["role"] == "assistant":
                prompt = tok.apply_chat_template(answered, add_generation_prompt=True,
                                                 tokenize=True, return_dict=True)["input_ids"]
                reply = tok.decode(greedy(model, tok, prompt, max_new, MAX_SEQ_LENGTH),
                                   skip_special_tokens=True)
                m = {"role": "assistant", "content": reply}
            answered.append(m)
        messages = answered
    enc = tok.apply_chat_template(messages, tokenize=True, return_dict=True,
                                  return_assistant_tokens_mask=True)
    return enc["input_ids"], enc["assistant_masks"]


def reference_states(model, ids, aux):
    """Aux layer outputs (forward hooks on the decoder layers) and the final norm's output."""
    got = {}

    def keep(name):
        def hook(module, args, output):
            got[name] = output[0] if isinstance(output, tuple) else output
        return hook

    hooks = [model.model.layers[i].register_forward_hook(keep(i)) for i in aux]
    hooks.append(model.model.norm.register_forward_hook(keep("norm")))
    with torch.no_grad():
        model(torch.tensor([ids]))
    for h in hooks:
        h.remove()
    return torch.cat([got[i][0] for i in aux], dim=-1), got["norm"][0]


def shard(rows, s, chunk, local_len, length):
    """Rows [s*C, min(s*C + local_len, L)) of a [L, ...] array, zero-padded to local_len."""
    out = np.zeros((local_len,) + rows.shape[1:], dtype=rows.dtype)
    part = rows[s * chunk: min(s * chunk + local_len, length)]
    out[: len(part)] = part
    return out


def check_head(model, folder, problems):
    """--target-out: config.json's sizes and tie flag, the tensors equal to the model's in bf16."""
    from safetensors.torch import load_file

    cfg = json.load(open(os.path.join(folder, "config.json")))
    tensors = load_file(os.path.join(folder, "model.safetensors"))
    tied = model.config.tie_word_embeddings
    want = {"model.embed_tokens.weight": model.model.embed_tokens.weight,
            "model.norm.weight": model.model.norm.weight}
    if not tied:
        want["lm_head.weight"] = model.lm_head.weight
    if sorted(tensors) != sorted(want):
        problems.append(f"{folder}: tensors {sorted(tensors)}, expected {sorted(want)}")
    for name, w in want.items():
        if name in tensors and not torch.equal(tensors[name], w.detach().to(torch.bfloat16)):
            problems.append(f"{folder}: {name} differs from the model's (bf16)")
    for key, value in {"hidden_size": 64, "vocab_size": model.config.vocab_size,
                       "rms_norm_eps": 1e-5, "tie_word_embeddings": tied}.items():
        if cfg.get(key) != value:
            problems.append(f"{folder}/config.json: {key}={cfg.get(key)}, expected {value}")


def check_run(out, variant, aux, max_new, expect, sp_size, ttt_length):
    """The mismatches of one producer run: model OUT/VARIANT, store and head in OUT/VARIANT.run."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(os.path.join(out, variant),
                                                 dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(os.path.join(out, variant))
    store = os.path.join(out, f"{variant}.run", "store")
    records = [json.loads(line) for line in open(os.path.join(out, "prompts.jsonl")) if line.strip()]
    with open(os.path.join(store, "manifest.jsonl")) as f:
        manifest = [json.loads(line) for line in f]
    problems = []
    check_head(model, os.path.join(out, f"{variant}.run", "target"), problems)
    with open(os.path.join(out, f"{variant}.run", "draft.json")) as f:
        draft = json.load(f)
    for where, ids in (("eagle_config.eagle_aux_hidden_state_layer_ids",
                        draft.get("eagle_config", {}).get("eagle_aux_hidden_state_layer_ids")),
                       ("eagle_aux_hidden_state_layer_ids",
                        draft.get("eagle_aux_hidden_state_layer_ids"))):
        if ids != aux:
            problems.append(f"draft.json {where} = {ids}, expected the aux layers {aux}")
    P, T = sp_size, ttt_length
    want_keys = {f"prompts_{i}" for i in expect}
    if {m["key"] for m in manifest} != want_keys or len(manifest) != len(want_keys):
        problems.append(f"manifest keys {[m['key'] for m in manifest]}, expected {sorted(want_keys)}")
    masked = 0
    for entry in manifest:
        key = entry["key"]
        index = int(key.rsplit("_", 1)[1])
        ids, mask = reference_tokens(records[index], model, tok, max_new)
        ids, mask = ids[:MAX_SEQ_LENGTH], mask[:MAX_SEQ_LENGTH]
        length = len(ids)
        chunk = math.ceil(length / P)
        local_len = chunk + T
        hs, lhs = reference_states(model, ids, aux)
        want = {"key": key, "seq_len": length, "hidden_size": 64, "num_aux": 3,
                "packed_loss_mask": pack(mask), "sp_size": P, "ttt_length": T,
                "max_seq_length": MAX_SEQ_LENGTH,
                "dtypes": {"hs": "bfloat16", "ids": "int64", "lhs": "bfloat16"}}
        if entry != want:
            problems.append(f"{key}: manifest line {entry}, expected {want}")
        masked += sum(mask)
        full = {"hs": bf16_bits(hs), "ids": np.asarray(ids, dtype=np.int64), "lhs": bf16_bits(lhs)}
        for s in range(P):
            for part, rows in full.items():
                name = f"{key}_usp{s}_{part}"
                expected = shard(rows, s, chunk, local_len, length).tobytes()
                with open(os.path.join(store, name), "rb") as f:
                    stored = f.read()
                if stored != expected:
                    diff = "sizes differ" if len(stored) != len(expected) else \
                        f"{sum(x != y for x, y in zip(stored, expected))} bytes differ"
                    problems.append(f"{name}: {diff} from the reference")
    for p in problems:
        print(f"FAIL {variant}: {p}")
    verdict = "PASS" if not problems else "FAIL"
    print(f"test_produce_hf check {variant}: {len(manifest)} samples, {masked} loss tokens, "
          f"{len(manifest) * P * 3} objects compared, {len(problems)} mismatches: {verdict}")
    return len(problems)


def parse_run(text):
    """VARIANT:AUX:NEW:EXPECT, e.g. tied:1,3,4:6:0,1,2 (aux ids, --max-new-tokens or 0 without
    --generate, the prompt line indices the manifest must hold)."""
    variant, aux, new, expect = text.split(":")
    ints = lambda t: [int(x) for x in t.split(",")]  # noqa: E731
    return variant, sorted(ints(aux)), int(new), ints(expect)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("prepare")
    m.add_argument("out")
    c = sub.add_parser("check")
    c.add_argument("out", help="the folder prepare made, with the producer's OUT/VARIANT.run")
    c.add_argument("--run", type=parse_run, action="append", required=True, help=parse_run.__doc__)
    c.add_argument("--sp-size", type=int, required=True)
    c.add_argument("--ttt-length", type=int, required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.cmd == "prepare":
        return prepare(a.out)
    failed = sum(check_run(a.out, *run, a.sp_size, a.ttt_length) for run in a.run)
    print(f"test_produce_hf check: {len(a.run)} runs, {failed} mismatches: "
          f"{'PASS' if not failed else 'FAIL'}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
