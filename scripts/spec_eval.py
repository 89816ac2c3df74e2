#!/usr/bin/env python3
"""Measures an exported Eagle3 draft's real acceptance by chain speculative decoding of its target.

    python scripts/spec_eval.py --target TARGET --draft EXPORT_DIR --prompts prompts.jsonl \\
        [--skip N] [--limit N] [--depth 7] [--max-new-tokens 128] --out eval.json [--plot eval.png]

TARGET is an HF model folder or a .gguf file (transformers' GGUF loading, dequantised to the
compute dtype). The draft is the folder `eaglet export` writes and SGLang loads: config.json and
model.safetensors (fc, midlayer.* or vLLM's layers.0.*, norm, lm_head, d2t, t2d); its embedding is
the target's. `--random-draft` evaluates an untrained draft instead, initialised as eaglet's
init_weights (linear weights ~ N(0, 0.02²), norms 1, the same seeded generator), with a config
derived from the target's (or `--draft-config FILE`).

Decoding, per prompt (chat-templated with the target's tokenizer):
  1. the target prefills the prompt and gives the first token (greedy); the draft extends its KV
     cache over the prompt: position i sees fc(target aux states of token i) and the embedding of
     token i+1, as TTT step 0 of eaglet's training (DESIGN §4);
  2. the draft proposes k = --depth tokens: the first from the last extended position, each next
     one from its own previous output hidden state (pre-norm) and the embedding of the token it
     just proposed, at the next position (TTT step k > 0); draft ids map to target ids through d2t
     (target_id = draft_id + d2t[draft_id]);
  3. the target verifies [last token, d_1..d_k] in one forward over its KV cache, accepts the
     longest prefix equal to its own greedy choice and appends its own next token (the bonus);
     both caches are rolled back (the target's to the accepted tokens, the draft's to before its
     speculative entries), and the draft extends over the newly accepted tokens with the target's
     aux states of them; repeat until --max-new-tokens or an EOS token.
Greedy verification must reproduce plain greedy decoding of the target exactly: every prompt is
also decoded greedily (one target forward per token) and compared; a mismatch is reported (with
the greedy logit margin where the sequences part) and makes the exit status 1.

Reported (stdout and --out JSON): tau = mean tokens per verification forward (bonus included),
per-position acceptance (position i accepted given i-1 accepted, and unconditional), target
forwards used vs plain greedy, time per prompt, and the acceptance eaglet's training metrics would
simulate on the same generated text (acc_ttt and accept_len of a teacher-forced TTT unroll).
--plot writes a PNG of the per-position acceptance (scripts/png_chart.py, no plotting library).

Test drafters (known values): --drafter oracle proposes the target's own greedy continuation
(tau must be exactly k+1 for every verification not cut by max-new-tokens or EOS), --drafter wrong
always proposes a token the target does not choose (tau exactly 1). --oracle-miss P makes the
oracle propose a wrong token with probability P at each position (seeded), so every verification's
accepted count is known in advance.

Needs torch, transformers (and gguf for .gguf targets), safetensors, numpy.
The draft maths is also importable (Eagle3Draft, teacher_forced_logits): tests/eval/ compares it
with eaglet's own forward.
"""

import argparse
import json
import math
import os
import sys
import time

import torch

import png_chart  # scripts/png_chart.py, beside this file

# --- the draft: config, weights, forward (eaglet's maths, src/model/eagle3.cpp) --------------------

TRAINABLE = [  # eaglet's Eagle3Weights::trainable() order: init_weights draws them in this order
    "fc.weight",
    "midlayer.input_layernorm.weight",
    "midlayer.hidden_norm.weight",
    "midlayer.post_attention_layernorm.weight",
    "midlayer.self_attn.q_proj.weight",
    "midlayer.self_attn.k_proj.weight",
    "midlayer.self_attn.v_proj.weight",
    "midlayer.self_attn.o_proj.weight",
    "midlayer.mlp.gate_proj.weight",
    "midlayer.mlp.up_proj.weight",
    "midlayer.mlp.down_proj.weight",
    "norm.weight",
    "lm_head.weight",
]


class DraftConfig:
    """The keys of an Eagle3 draft's config.json that the forward needs (docs/FORMATS.md)."""

    def __init__(self, j, where="config"):
        def need(key):
            if j.get(key) is None:
                raise ValueError(f"{where}: no {key!r}")
            return j[key]

        self.hidden_size = int(need("hidden_size"))
        self.num_attention_heads = int(need("num_attention_heads"))
        self.num_key_value_heads = int(need("num_key_value_heads"))
        self.head_dim = int(j.get("head_dim") or self.hidden_size // self.num_attention_heads)
        self.intermediate_size = int(need("intermediate_size"))
        self.vocab_size = int(need("vocab_size"))
        self.draft_vocab_size = int(j.get("draft_vocab_size") or self.vocab_size)
        self.target_hidden_size = int(j.get("target_hidden_size") or self.hidden_size)
        self.rms_norm_eps = float(j.get("rms_norm_eps", 1e-6))
        rope = j.get("rope_scaling") or {}
        params = j.get("rope_parameters") or {}  # transformers >= 5 names
        self.rope_theta = float(j.get("rope_theta") or params.get("rope_theta") or 10000.0)
        if not rope and params.get("rope_type", "default") not in ("default", None):
            rope = params
        kind = rope.get("rope_type", rope.get("type", "none")) if rope else "none"
        self.rope_type = "none" if kind in (None, "default", "none") else kind
        if self.rope_type not in ("none", "linear", "llama3"):
            raise ValueError(f"{where}: rope_scaling type {kind!r} is not supported (none, linear, llama3)")
        self.rope_factor = float(rope.get("factor", 1.0))
        self.rope_low_freq_factor = float(rope.get("low_freq_factor", 1.0))
        self.rope_high_freq_factor = float(rope.get("high_freq_factor", 4.0))
        self.rope_original_max = int(rope.get("original_max_position_embeddings", 8192))
        self.aux_layer_ids = j.get("eagle_aux_hidden_state_layer_ids") or (
            (j.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids"))
        self.json = dict(j)
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"{where}: num_attention_heads {self.num_attention_heads} is not a "
                             f"multiple of num_key_value_heads {self.num_key_value_heads}")

    def shape(self, name):
        """eaglet's weight_shape (src/model/eagle3.cpp)."""
        H, q = self.hidden_size, self.num_attention_heads * self.head_dim
        kv = self.num_key_value_heads * self.head_dim
        if name == "fc.weight":
            return [H, 3 * self.target_hidden_size]
        if "norm" in name:
            return [H]
        if name == "midlayer.self_attn.q_proj.weight":
            return [q, 2 * H]
        if name in ("midlayer.self_attn.k_proj.weight", "midlayer.self_attn.v_proj.weight"):
            return [kv, 2 * H]
        if name == "midlayer.self_attn.o_proj.weight":
            return [H, q]
        if name in ("midlayer.mlp.gate_proj.weight", "midlayer.mlp.up_proj.weight"):
            return [self.intermediate_size, H]
        if name == "midlayer.mlp.down_proj.weight":
            return [H, self.intermediate_size]
        if name == "lm_head.weight":
            return [self.draft_vocab_size, H]
        raise KeyError(name)


def rope_inv_freq(cfg, dtype):
    """inv_freq_i = θ^(−2i/d) with rope scaling, as eaglet's rope_inv_freq (src/model/layers.cpp):
    computed in fp64, rounded once to fp32 (kept fp64 when computing in fp64, as eaglet's fp64
    reference does)."""
    d = cfg.head_dim
    idx = torch.arange(0, d, 2, dtype=torch.float64)
    inv = 1.0 / torch.pow(torch.tensor(cfg.rope_theta, dtype=torch.float64), idx / d)
    if cfg.rope_type == "linear":
        inv = inv / cfg.rope_factor
    elif cfg.rope_type == "llama3":
        factor, lo, hi = cfg.rope_factor, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
        old_ctx = float(cfg.rope_original_max)
        low_wavelen, high_wavelen = old_ctx / lo, old_ctx / hi
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old_ctx / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv = torch.where(medium, smoothed, scaled)
    return inv if dtype == torch.float64 else inv.to(torch.float32)


def rms_norm(x, w, eps):
    """DESIGN §4: statistics in fp32 (or wider), cast back, then × weight."""
    acc = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    y = (acc * torch.rsqrt(acc.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return w * y


def apply_rope(x, pos, inv_freq):
    """Rotate-half RoPE of x [n, heads, d] at int64 positions [n]; tables in fp32 (fp64 in fp64)."""
    freqs = torch.outer(pos.to(inv_freq.dtype), inv_freq)
    emb = torch.cat([freqs, freqs], -1)
    cos, sin = emb.cos().to(x.dtype).unsqueeze(1), emb.sin().to(x.dtype).unsqueeze(1)
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * cos + rot * sin


class DraftCache:
    """The draft's KV cache: post-RoPE keys and values [n, nKV, d], one entry per position, in
    sequence order (prefix entries from target aux states, then speculative ones)."""

    def __init__(self):
        self.k = None
        self.v = None

    def __len__(self):
        return 0 if self.k is None else self.k.shape[0]

    def append(self, k, v):
        self.k = k if self.k is None else torch.cat([self.k, k])
        self.v = v if self.v is None else torch.cat([self.v, v])

    def crop(self, n):
        """Keeps the first n entries (rolls back speculative ones)."""
        if self.k is not None:
            self.k, self.v = self.k[:n], self.v[:n]


class Eagle3Draft:
    """An Eagle3 draft with eaglet's forward (DESIGN §4), in one compute dtype on the CPU."""

    def __init__(self, cfg, weights, embed, d2t, dtype=torch.float32):
        self.cfg, self.dtype = cfg, dtype
        for name in TRAINABLE:
            if name not in weights:
                raise ValueError(f"draft: no tensor {name}")
            if list(weights[name].shape) != cfg.shape(name):
                raise ValueError(f"draft: {name} is {list(weights[name].shape)}, the config needs "
                                 f"{cfg.shape(name)}")
        if list(embed.shape) != [cfg.vocab_size, cfg.hidden_size]:
            raise ValueError(f"draft: the target's embedding is {list(embed.shape)}, the draft config "
                             f"needs [{cfg.vocab_size}, {cfg.hidden_size}] (vocab_size, hidden_size)")
        self.w = {n: weights[n].to(dtype) for n in TRAINABLE}
        self.embed = embed.to(dtype)
        d2t = d2t.to(torch.int64)
        if d2t.shape != (cfg.draft_vocab_size,):
            raise ValueError(f"draft: d2t is {list(d2t.shape)}, expected [{cfg.draft_vocab_size}]")
        self.draft_to_target = torch.arange(cfg.draft_vocab_size) + d2t
        ids = self.draft_to_target
        if ids.min() < 0 or ids.max() >= cfg.vocab_size:
            raise ValueError("draft: d2t maps a draft id outside the target vocabulary")
        self.inv_freq = rope_inv_freq(cfg, dtype)

    @staticmethod
    def load(folder, embed, dtype=torch.float32):
        """An export folder (config.json + model.safetensors; SGLang or vLLM names)."""
        from safetensors.torch import load_file

        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            cfg = DraftConfig(json.load(f), os.path.join(folder, "config.json"))
        raw = load_file(os.path.join(folder, "model.safetensors"))
        weights = {(("midlayer." + k[len("layers.0."):]) if k.startswith("layers.0.") else k): v
                   for k, v in raw.items()}
        if "d2t" in weights:
            d2t = weights["d2t"]
        elif cfg.draft_vocab_size == cfg.vocab_size:
            d2t = torch.zeros(cfg.vocab_size, dtype=torch.int64)
        else:
            raise ValueError(f"{folder}: no d2t and draft_vocab_size {cfg.draft_vocab_size} != "
                             f"vocab_size {cfg.vocab_size}")
        return Eagle3Draft(cfg, weights, embed, d2t, dtype)

    @staticmethod
    def random(cfg, embed, d2t, seed, dtype=torch.float32):
        """eaglet's init_weights: linear weights ~ N(0, 0.02²) drawn in trainable order from one
        seeded CPU generator, norms 1."""
        gen = torch.Generator().manual_seed(seed)
        weights = {}
        for name in TRAINABLE:
            shape = cfg.shape(name)
            weights[name] = (torch.ones(shape) if "norm" in name
                             else torch.normal(0.0, 0.02, shape, generator=gen))
        return Eagle3Draft(cfg, weights, embed, d2t, dtype)

    def fc(self, aux):
        """Step-0 input hidden: fc over the concatenated aux states [n, 3·Ht]."""
        return aux.to(self.dtype) @ self.w["fc.weight"].t()

    def layer(self, ids, h, pos, keys, values, allowed):
        """The midlayer on n rows: ids [n] (target ids), h [n, H] input hidden, pos [n] int64.
        keys/values: [m, nKV, d] earlier entries (or None); allowed [n, m + n] bool over
        earlier + new entries. Returns (logits [n, Vd], out [n, H] pre-norm, k_new, v_new)."""
        c, w, eps = self.cfg, self.w, self.cfg.rms_norm_eps
        n, nH, nKV, d = ids.shape[0], c.num_attention_heads, c.num_key_value_heads, c.head_dim
        emb = self.embed[ids.clamp(0, c.vocab_size - 1)]
        x = torch.cat([rms_norm(emb, w["midlayer.input_layernorm.weight"], eps),
                       rms_norm(h, w["midlayer.hidden_norm.weight"], eps)], -1)
        q = apply_rope((x @ w["midlayer.self_attn.q_proj.weight"].t()).view(n, nH, d), pos, self.inv_freq)
        k = apply_rope((x @ w["midlayer.self_attn.k_proj.weight"].t()).view(n, nKV, d), pos, self.inv_freq)
        v = (x @ w["midlayer.self_attn.v_proj.weight"].t()).view(n, nKV, d)
        K = k if keys is None else torch.cat([keys, k])
        V = v if values is None else torch.cat([values, v])
        g = nH // nKV  # query head j uses KV head j // g
        Kh, Vh = K.repeat_interleave(g, dim=1), V.repeat_interleave(g, dim=1)
        s = torch.einsum("qhd,khd->hqk", q, Kh) / math.sqrt(d)
        s = s.masked_fill(~allowed.unsqueeze(0), float("-inf"))
        p = torch.softmax(s.to(torch.float64 if self.dtype == torch.float64 else torch.float32), -1)
        a = torch.einsum("hqk,khd->qhd", p.to(self.dtype), Vh).reshape(n, nH * d)
        h1 = h + a @ w["midlayer.self_attn.o_proj.weight"].t()
        m = rms_norm(h1, w["midlayer.post_attention_layernorm.weight"], eps)
        mlp = (torch.nn.functional.silu(m @ w["midlayer.mlp.gate_proj.weight"].t()) *
               (m @ w["midlayer.mlp.up_proj.weight"].t())) @ w["midlayer.mlp.down_proj.weight"].t()
        out = h1 + mlp
        logits = rms_norm(out, w["norm.weight"], eps) @ w["lm_head.weight"].t()
        return logits, out, k, v

    def step(self, cache, ids, h, first_pos):
        """n new entries at positions first_pos.. appended to `cache` (causal over it).
        Returns (logits [n, Vd], out hidden [n, H])."""
        n, m = ids.shape[0], len(cache)
        pos = torch.arange(first_pos, first_pos + n, dtype=torch.int64)
        allowed = torch.arange(m + n).unsqueeze(0) <= (m + torch.arange(n)).unsqueeze(1)
        logits, out, k, v = self.layer(ids, h, pos, cache.k, cache.v, allowed)
        cache.append(k, v)
        return logits, out

    def to_target(self, draft_ids):
        return self.draft_to_target[draft_ids]


def teacher_forced_logits(draft, hs, ids, steps):
    """eaglet's TTT unroll on one whole sample (P = 1, as its fp64 reference, src/model/
    reference.cpp): hs [L, 3·Ht] aux states, ids [L] tokens. Rows i = 0..L−1; ids past the end are 0
    (the halo's padding). Step k at row i: token ids[i+k+1], position i+k, input hidden fc(hs[i])
    at k = 0, else step k−1's output at row i; keys: step 0's j <= i and steps 1..k at row i.
    Returns (logits [L, Vd] per step, outputs [L, H] per step)."""
    L = ids.shape[0]
    padded = torch.cat([ids.to(torch.int64), torch.zeros(steps, dtype=torch.int64)])
    h = draft.fc(hs)
    keys = values = None
    causal = torch.tril(torch.ones(L, L, dtype=torch.bool))
    eye = torch.eye(L, dtype=torch.bool)
    logits, outs = [], []
    for k in range(steps):
        allowed = torch.cat([causal] + [eye] * k, 1)  # step 0's keys causal, steps 1..k diagonal
        pos = torch.arange(L, dtype=torch.int64) + k
        z, out, kk, vv = draft.layer(padded[k + 1:k + 1 + L], h, pos, keys, values, allowed)
        keys = kk if keys is None else torch.cat([keys, kk])
        values = vv if values is None else torch.cat([values, vv])
        logits.append(z)
        outs.append(out)
        h = out
    return logits, outs


# --- drafters ---------------------------------------------------------------------------------------

class Eagle3Drafter:
    """Chain drafting with an Eagle3 draft as SGLang's Eagle3 worker runs it (see the module text).

    State: committed tokens x_0..x_M (x_M the newest, whose target aux state is not known yet) and
    the draft cache holding one entry per position 0..M−1 (entry i: fc(aux_i), emb(x_{i+1}))."""

    name = "eagle3"

    def __init__(self, draft):
        self.draft = draft
        self.cache = DraftCache()
        self.last_hidden = None  # the output hidden of the last extended entry
        self.last_logits = None
        self.time_s = 0.0
        self.forwards = 0

    def reset(self):
        self.cache = DraftCache()
        self.last_hidden = self.last_logits = None

    def extend(self, tokens, aux):
        """The target has produced aux states `aux` [n, 3·Ht] for tokens[M−n..M−1] (M + 1 =
        len(tokens)); speculative entries are rolled back first."""
        t0 = time.perf_counter()
        n, M = aux.shape[0], len(tokens) - 1
        start = M - n
        self.cache.crop(start)
        ids = torch.tensor(tokens[start + 1:M + 1], dtype=torch.int64)
        logits, out = self.draft.step(self.cache, ids, self.draft.fc(aux), start)
        self.last_logits, self.last_hidden = logits[-1:], out[-1:]
        self.forwards += 1
        self.time_s += time.perf_counter() - t0

    def propose(self, tokens, k, forced=None):
        """k target token ids continuing `tokens`. Leaves k−1 speculative entries in the cache
        (rolled back by the next extend). The logits [1, Vd] behind each proposal are kept in
        step_logits. forced (test hook): tokens fed in place of the draft's own choices, as TTT's
        teacher forcing does."""
        t0 = time.perf_counter()
        M = len(tokens) - 1
        out, self.step_logits = [], []
        logits, h = self.last_logits, self.last_hidden
        for j in range(k):
            self.step_logits.append(logits[-1:])
            tok = (forced[j] if forced is not None else
                   int(self.draft.to_target(int(torch.argmax(logits[-1])))))
            out.append(int(tok))
            if j + 1 == k:
                break
            # Spec step j+1: the proposed token's embedding with the draft's own hidden, at the
            # next position (eaglet's TTT step j+1 uses position i + j + 1).
            logits, h = self.draft.step(self.cache, torch.tensor([int(tok)]), h, M + j)
            self.forwards += 1
        self.time_s += time.perf_counter() - t0
        return out


class OracleDrafter:
    """Test drafter: proposes the target's own greedy continuation (`reference`: the prompt's
    greedy tokens, long enough), or with probability `miss` per position a token the target
    does not choose. `wrong=True` always proposes such a token."""

    def __init__(self, reference_by_prompt, wrong=False, miss=0.0, seed=0, vocab_size=None):
        self.reference_by_prompt = reference_by_prompt
        self.wrong, self.miss = wrong, miss
        self.name = "wrong" if wrong else ("oracle" if miss == 0 else f"oracle(miss={miss})")
        self.gen = torch.Generator().manual_seed(seed)
        self.vocab_size = vocab_size
        self.time_s, self.forwards = 0.0, 0
        self.prompt_len, self.reference = 0, []

    def start(self, index, prompt_len):
        self.reference, self.prompt_len = self.reference_by_prompt[index], prompt_len

    def reset(self):
        pass

    def extend(self, tokens, aux):
        pass

    def propose(self, tokens, k):
        at = len(tokens) - self.prompt_len  # index of the next token in the greedy reference
        out = []
        for j in range(k):
            want = self.reference[at + j] if at + j < len(self.reference) else 0
            miss = self.wrong or (self.miss > 0 and float(torch.rand(1, generator=self.gen)) < self.miss)
            out.append((want + 1) % self.vocab_size if miss else want)
        return out


# --- the target --------------------------------------------------------------------------------------

def load_target(path, dtype, threads=0):
    """(model, tokenizer) from an HF folder or a .gguf file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = {}
    folder = path
    if path.endswith(".gguf"):
        folder, kw["gguf_file"] = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    tok = AutoTokenizer.from_pretrained(folder, **kw)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **kw)
    except TypeError:  # transformers < 4.56 names it torch_dtype
        model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=dtype, **kw)
    model.eval()
    return model, tok


def text_config(model):
    c = model.config
    return c.get_text_config() if hasattr(c, "get_text_config") else c


class Target:
    """The target with a KV cache that can be rolled back; forward() gives logits and the
    concatenated aux states (HF hidden_states[id + 1] for each aux layer id: layer id's output)."""

    def __init__(self, model, aux_layers):
        import inspect

        self.model, self.aux_layers = model, aux_layers
        self.cache = None
        # transformers >= 5.25 calls the cache argument and output `cache`, earlier versions
        # `past_key_values`.
        params = inspect.signature(model.forward).parameters
        self.cache_key = "cache" if "cache" in params else "past_key_values"
        self.forwards, self.time_s = 0, 0.0

    def reset(self):
        self.cache = None

    def __len__(self):
        return 0 if self.cache is None else self.cache.get_seq_length()

    @torch.no_grad()
    def forward(self, ids, want_aux=True):
        t0 = time.perf_counter()
        out = self.model(input_ids=torch.tensor([ids], dtype=torch.int64), use_cache=True,
                         output_hidden_states=want_aux, **{self.cache_key: self.cache})
        self.cache = out[self.cache_key]
        aux = (torch.cat([out.hidden_states[i + 1][0] for i in self.aux_layers], -1)
               if want_aux else None)
        self.forwards += 1
        self.time_s += time.perf_counter() - t0
        return out.logits[0], aux

    def crop(self, n):
        """Keeps the first n cached positions (negative crop: remove that many, in every version)."""
        remove = len(self) - n
        if remove > 0:
            self.cache.crop(-remove)


def greedy_decode(target, prompt, max_new, eos):
    """Plain greedy decoding, one target forward per token. Returns (tokens, margins): margins[j]
    is the top-1 minus top-2 logit of the choice of token j."""
    target.reset()
    logits, _ = target.forward(prompt, want_aux=False)
    out, margins = [], []
    while True:
        top = torch.topk(logits[-1], 2)
        out.append(int(top.indices[0]))
        margins.append(float(top.values[0] - top.values[1]))
        if len(out) >= max_new or out[-1] in eos:
            return out, margins
        logits, _ = target.forward([out[-1]], want_aux=False)


def speculative_decode(target, drafter, prompt, depth, max_new, eos):
    """Chain speculative decoding with greedy verification. Returns (new tokens, rounds); rounds:
    one dict per verification: proposed (the k draft tokens), accepted (how many the target
    accepted, before any cut), kept (tokens committed), cut (stopped by max_new or EOS here)."""
    target.reset()
    drafter.reset()
    logits, aux = target.forward(prompt)
    tokens = list(prompt) + [int(torch.argmax(logits[-1]))]
    new = 1
    rounds = []
    if new >= max_new or tokens[-1] in eos:
        return tokens[len(prompt):], rounds
    drafter.extend(tokens, aux)
    while True:
        proposal = drafter.propose(tokens, depth)
        M = len(tokens) - 1  # target cache holds x_0..x_{M-1}
        logits, aux = target.forward([tokens[-1]] + proposal)
        choice = torch.argmax(logits, -1).tolist()  # choice[j]: the target's token after d_j
        a = 0
        while a < depth and proposal[a] == choice[a]:
            a += 1
        commit = proposal[:a] + [choice[a]]
        kept, cut = [], False
        for t in commit:
            kept.append(t)
            if new + len(kept) >= max_new or t in eos:
                cut = True
                break
        tokens += kept
        new += len(kept)
        rounds.append({"proposed": proposal, "accepted": a, "kept": len(kept), "cut": cut})
        if cut:
            return tokens[len(prompt):], rounds
        # Roll back: the target keeps x_M and the accepted d_1..d_a; the draft extends over them.
        target.crop(M + 1 + a)
        drafter.extend(tokens, aux[:a + 1])


# --- prompts ------------------------------------------------------------------------------------------

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
         "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "model": "assistant",
         "system": "system"}


def prompt_messages(rec, where):
    """The messages before the first assistant turn of a ShareGPT ("conversations": [{"from",
    "value"}]), "messages" ([{"role", "content"}]) or "text" line; None when there is no user turn."""
    if "conversations" in rec or "messages" in rec:
        turns = rec.get("conversations") or rec.get("messages") or []
        msgs = []
        for t in turns:
            role = ROLES.get(str(t.get("from", t.get("role", ""))).lower())
            text = t.get("value", t.get("content"))
            if role is None or not isinstance(text, str):
                raise ValueError(f"{where}: turn {t!r} has no known role or no text")
            if role == "assistant":
                if any(m["role"] == "user" for m in msgs):
                    break
                continue  # a conversation opening with the assistant: skip to the first user turn
            msgs.append({"role": role, "content": text})
        return msgs if any(m["role"] == "user" for m in msgs) else None
    if isinstance(rec.get("text"), str):
        return [{"role": "user", "content": rec["text"]}]
    raise ValueError(f"{where}: expected a \"conversations\", \"messages\" or \"text\" key")


def read_prompts(path, skip, limit):
    """[(line number, messages)] of lines skip+1 .. skip+limit that have a user turn."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            if n <= skip:
                continue
            msgs = prompt_messages(json.loads(line), f"{path}:{n}")
            if msgs is None:
                print(f"spec_eval: {path}:{n}: no user turn, skipped", file=sys.stderr)
                continue
            out.append((n, msgs))
            if limit and len(out) >= limit:
                break
    return out


def encode(tok, msgs, chat_template=True):
    if chat_template and getattr(tok, "chat_template", None):
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return tok(text, add_special_tokens=False)["input_ids"]
    return tok("\n\n".join(m["content"] for m in msgs))["input_ids"]


# --- metrics ------------------------------------------------------------------------------------------

def acceptance(rounds, depth):
    """Per position i = 1..depth: rounds reaching it (i−1 accepted), accepting it, the conditional
    (None where no round reached it) and unconditional rates."""
    reached = [sum(r["accepted"] >= i - 1 for r in rounds) for i in range(1, depth + 1)]
    accepted = [sum(r["accepted"] >= i for r in rounds) for i in range(1, depth + 1)]
    n = max(len(rounds), 1)
    return {"reached": reached, "accepted": accepted,
            "conditional": [a / r if r else None for a, r in zip(accepted, reached)],
            "unconditional": [a / n for a in accepted]}


@torch.no_grad()
def simulated_acceptance(draft, target, tokens, prompt_len, steps):
    """What eaglet's training metrics would report on this text: the teacher-forced TTT unroll
    over prompt + generated tokens with the target's aux states, counting step-k predictions of
    generated tokens (row i predicts token i+k+2) whose token is in the draft vocabulary (eaglet's
    t2d mask); the text is the target's greedy output, so its token is the target's argmax.
    Returns (correct [steps], counts [steps], rows outside the draft vocabulary [steps])."""
    target.reset()
    _, aux = target.forward(tokens)
    ids = torch.tensor(tokens, dtype=torch.int64)
    logits, _ = teacher_forced_logits(draft, aux, ids, steps)
    in_vocab = torch.zeros(draft.cfg.vocab_size, dtype=torch.bool)
    in_vocab[draft.draft_to_target] = True
    L = len(tokens)
    correct, counts, outside = [], [], []
    for k, z in enumerate(logits):
        rows = torch.arange(L)
        t = rows + k + 2
        ok = (t >= prompt_len + 1) & (t < L)  # generated tokens after the first (the prefill's)
        pred = draft.to_target(torch.argmax(z, -1))
        truth = torch.where(ok, ids[t.clamp(max=L - 1)], torch.zeros_like(rows))
        inv = in_vocab[truth] & ok
        correct.append(int(((pred == truth) & inv).sum()))
        counts.append(int(inv.sum()))
        outside.append(int((ok & ~in_vocab[truth]).sum()))
    return correct, counts, outside


def plot_acceptance(path, report):
    """PNG of the per-position acceptance (scripts/png_chart.py: numpy and zlib only); returns
    the chart's png_chart.Frame (its pixel edges, for tests)."""
    acc = report["acceptance"]
    series = [("given position i-1 accepted", acc["conditional"]),
              ("unconditional", acc["unconditional"])]
    sim = report.get("simulated")
    if sim:
        series.append(("eaglet acc_ttt (teacher-forced, same text)", sim["acc_ttt"]))
    return png_chart.line_chart(path, series, f"{report['drafter']}: τ = {report['tau']:.3f} "
                                f"(depth {len(acc['conditional'])}, {report['prompts']} prompts)",
                                "draft position i", "acceptance rate")


# --- main -----------------------------------------------------------------------------------------------

def derived_draft_config(tcfg, draft_vocab_size):
    """A draft config.json for a target config: its sizes, RoPE and vocabulary."""
    H = tcfg.hidden_size
    nH = tcfg.num_attention_heads
    j = {"hidden_size": H, "num_attention_heads": nH,
         "num_key_value_heads": getattr(tcfg, "num_key_value_heads", None) or nH,
         "head_dim": getattr(tcfg, "head_dim", None) or H // nH,
         "intermediate_size": tcfg.intermediate_size, "vocab_size": tcfg.vocab_size,
         "draft_vocab_size": min(draft_vocab_size, tcfg.vocab_size), "target_hidden_size": H,
         "rms_norm_eps": getattr(tcfg, "rms_norm_eps", 1e-6),
         "max_position_embeddings": getattr(tcfg, "max_position_embeddings", 4096)}
    params = getattr(tcfg, "rope_parameters", None)
    if params:
        j["rope_parameters"] = dict(params)
    else:
        j["rope_theta"] = getattr(tcfg, "rope_theta", 10000.0)
        j["rope_scaling"] = getattr(tcfg, "rope_scaling", None)
    return j


def frequency_vocab(prompts_ids, vocab_size, draft_vocab_size):
    """d2t of the draft_vocab_size most frequent prompt tokens (ties to the lower id, then the
    lowest unseen ids), sorted by id: eaglet's vocab_from_counts on the prompts."""
    counts = torch.zeros(vocab_size, dtype=torch.int64)
    for ids in prompts_ids:
        counts += torch.bincount(torch.tensor(ids, dtype=torch.int64), minlength=vocab_size)
    order = sorted(range(vocab_size), key=lambda i: (-int(counts[i]), i))[:draft_vocab_size]
    ids = torch.tensor(sorted(order), dtype=torch.int64)
    return ids - torch.arange(draft_vocab_size)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See docs/GUIDE.md, 'Measuring real acceptance'.")
    ap.add_argument("--target", required=True, help="HF model folder or .gguf file")
    ap.add_argument("--draft", help="exported Eagle3 draft folder (eaglet export)")
    ap.add_argument("--random-draft", action="store_true",
                    help="an untrained draft initialised as eaglet's init (no --draft)")
    ap.add_argument("--draft-config", help="--random-draft: the draft's config.json (default: "
                    "derived from the target's)")
    ap.add_argument("--draft-vocab-size", type=int, default=8192,
                    help="--random-draft without --draft-config: Vd (default 8192; the vocabulary "
                         "is the most frequent prompt tokens)")
    ap.add_argument("--seed", type=int, default=1, help="--random-draft seed (eaglet's training.seed)")
    ap.add_argument("--drafter", choices=["eagle3", "oracle", "wrong"], default="eagle3",
                    help="test drafters with known results (see the module text)")
    ap.add_argument("--oracle-miss", type=float, default=0.0,
                    help="--drafter oracle: probability of a wrong proposal per position")
    ap.add_argument("--prompts", required=True, help="JSONL: ShareGPT conversations, messages or text")
    ap.add_argument("--skip", type=int, default=0, help="skip the first N lines (the training ones)")
    ap.add_argument("--limit", type=int, default=10, help="prompts to evaluate (0: all)")
    ap.add_argument("--no-chat-template", action="store_true", help="feed the prompt text raw")
    ap.add_argument("--max-prompt-tokens", type=int, default=2048, help="longer prompts are skipped")
    ap.add_argument("--depth", type=int, default=7, help="draft tokens per verification k")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--ignore-eos", action="store_true", help="always generate --max-new-tokens")
    ap.add_argument("--eos-ids", help="comma-separated token ids that end a generation (default: "
                    "the tokenizer's and generation config's EOS)")
    ap.add_argument("--aux-layers", help="comma-separated target layer ids whose outputs feed fc "
                    "(default: the draft config's eagle_aux_hidden_state_layer_ids, else SGLang's "
                    "[1, N//2-1, N-4])")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--no-simulate", action="store_true",
                    help="skip the teacher-forced acc_ttt / accept_len on the generated text")
    ap.add_argument("--out", help="JSON report")
    ap.add_argument("--plot", help="PNG of the per-position acceptance")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    if a.drafter == "eagle3" and bool(a.draft) == bool(a.random_draft):
        ap.error("give exactly one of --draft DIR and --random-draft")
    if a.depth < 1 or a.max_new_tokens < 1:
        ap.error("--depth and --max-new-tokens must be >= 1")
    return a


def main(argv=None):
    a = parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    dtype = torch.float64 if a.dtype == "float64" else torch.float32
    say = (lambda *x: None) if a.quiet else (lambda *x: print(*x, flush=True))
    t_load = time.perf_counter()
    model, tok = load_target(a.target, dtype)
    tcfg = text_config(model)
    n_layers = tcfg.num_hidden_layers
    embed = model.get_input_embeddings().weight.detach()

    prompts = read_prompts(a.prompts, a.skip, a.limit)
    encoded = []
    for line, msgs in prompts:
        ids = encode(tok, msgs, not a.no_chat_template)
        if len(ids) > a.max_prompt_tokens:
            print(f"spec_eval: {a.prompts}:{line}: {len(ids)} tokens > --max-prompt-tokens, skipped",
                  file=sys.stderr)
            continue
        encoded.append((line, ids))
    if not encoded:
        sys.exit(f"spec_eval: no prompts in {a.prompts} (after --skip {a.skip})")

    draft = None
    if a.drafter == "eagle3":
        if a.draft:
            draft = Eagle3Draft.load(a.draft, embed, dtype)
        else:
            if a.draft_config:
                with open(a.draft_config, encoding="utf-8") as f:
                    dj = json.load(f)
            else:
                dj = derived_draft_config(tcfg, a.draft_vocab_size)
            cfg = DraftConfig(dj, a.draft_config or "derived draft config")
            d2t = frequency_vocab([ids for _, ids in encoded], cfg.vocab_size, cfg.draft_vocab_size)
            draft = Eagle3Draft.random(cfg, embed, d2t, a.seed, dtype)
    if a.aux_layers:
        aux_layers = [int(x) for x in a.aux_layers.split(",")]
    elif draft is not None and draft.cfg.aux_layer_ids:
        aux_layers = [int(x) for x in draft.cfg.aux_layer_ids]
    else:
        aux_layers = [1, n_layers // 2 - 1, n_layers - 4]
    if len(aux_layers) != 3 or not all(0 <= i < n_layers for i in aux_layers):
        sys.exit(f"spec_eval: aux layers {aux_layers}: need 3 layer ids in [0, {n_layers})")
    if draft is not None and draft.cfg.target_hidden_size != tcfg.hidden_size:
        sys.exit(f"spec_eval: the draft's target_hidden_size {draft.cfg.target_hidden_size} is not "
                 f"the target's hidden_size {tcfg.hidden_size}")
    target = Target(model, aux_layers)
    eos = set()
    if a.eos_ids and not a.ignore_eos:
        eos = {int(x) for x in a.eos_ids.split(",")}
    elif not a.ignore_eos:
        for e in (tok.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
            eos.update(e if isinstance(e, list) else ([] if e is None else [e]))
    t_load = time.perf_counter() - t_load
    say(f"spec_eval: target {a.target} ({n_layers} layers, hidden {tcfg.hidden_size}, vocab "
        f"{tcfg.vocab_size}), aux layers {aux_layers}, drafter "
        f"{a.drafter if draft is None else (a.draft or 'random init (seed %d)' % a.seed)}, depth "
        f"{a.depth}, {len(encoded)} prompts, loaded in {t_load:.1f} s")

    # Plain greedy first: the reference the speculative output must equal (and the oracle's).
    greedy, margins, greedy_s = [], [], []
    for i, (line, ids) in enumerate(encoded):
        t0 = time.perf_counter()
        extra = a.depth + 1 if a.drafter == "oracle" else 0  # the oracle proposes past the end
        out, marg = greedy_decode(target, ids, a.max_new_tokens + extra, eos)
        greedy_s.append(time.perf_counter() - t0)
        greedy.append(out)
        margins.append(marg)
    if a.drafter == "eagle3":
        drafter = Eagle3Drafter(draft)
    else:
        drafter = OracleDrafter(greedy, wrong=a.drafter == "wrong", miss=a.oracle_miss,
                                seed=a.seed, vocab_size=tcfg.vocab_size)

    per_prompt, all_rounds, mismatches = [], [], []
    sim_correct = [0] * a.depth
    sim_counts = [0] * a.depth
    sim_outside = [0] * a.depth
    for i, (line, ids) in enumerate(encoded):
        if hasattr(drafter, "start"):
            drafter.start(i, len(ids))
        ref = greedy[i]
        # The reference cut as plain greedy decoding with --max-new-tokens stops.
        want = ref[:a.max_new_tokens]
        for j, t in enumerate(want):
            if t in eos:
                want = want[:j + 1]
                break
        f0, d0, dt0 = target.forwards, drafter.time_s, target.time_s
        t0 = time.perf_counter()
        out, rounds = speculative_decode(target, drafter, ids, a.depth, a.max_new_tokens, eos)
        spec_s = time.perf_counter() - t0
        verify = target.forwards - f0 - 1
        match = out == want
        rec = {"line": line, "prompt_tokens": len(ids), "new_tokens": len(out),
               "verifications": verify, "target_forwards": verify + 1,
               "greedy_forwards": len(want), "accepted": [r["accepted"] for r in rounds],
               "kept": [r["kept"] for r in rounds], "cut": [r["cut"] for r in rounds],
               "tau": (sum(r["kept"] for r in rounds) / len(rounds)) if rounds else None,
               "greedy_match": match, "spec_s": spec_s, "greedy_s": greedy_s[i],
               "draft_s": drafter.time_s - d0, "target_s": target.time_s - dt0,
               "text": tok.decode(out)[:400], "tokens": out,
               "proposed": [r["proposed"] for r in rounds]}
        if not match:
            j = next((j for j in range(min(len(out), len(want))) if out[j] != want[j]),
                     min(len(out), len(want)))
            mis = {"line": line, "first_difference": j, "spec_len": len(out), "greedy_len": len(want),
                   "greedy_margin": margins[i][j] if j < len(margins[i]) else None}
            mismatches.append(mis)
            rec["mismatch"] = mis
        if draft is not None and not a.no_simulate and len(out) > 1:
            c, n, o = simulated_acceptance(draft, target, list(ids) + out, len(ids), a.depth)
            for k in range(a.depth):
                sim_correct[k] += c[k]
                sim_counts[k] += n[k]
                sim_outside[k] += o[k]
        per_prompt.append(rec)
        all_rounds += rounds
        say(f"  prompt {i + 1}/{len(encoded)} (line {line}, {len(ids)} tokens): {len(out)} new in "
            f"{len(rounds)} verifications, tau {rec['tau'] if rec['tau'] is None else round(rec['tau'], 3)}, "
            f"{spec_s:.2f} s (greedy {greedy_s[i]:.2f} s){'' if match else '  MISMATCH vs greedy'}")

    kept = sum(r["kept"] for r in all_rounds)
    uncut = [r for r in all_rounds if not r["cut"]]
    tokens = sum(p["new_tokens"] for p in per_prompt)
    spec_fw = sum(p["target_forwards"] for p in per_prompt)
    greedy_total = sum(p["greedy_forwards"] for p in per_prompt)
    report = {
        "target": a.target, "draft": a.draft or ("random init" if a.random_draft else None),
        "drafter": drafter.name if draft is None else ("eagle3 " + (a.draft or "random init")),
        "depth": a.depth, "max_new_tokens": a.max_new_tokens, "aux_layers": aux_layers,
        "dtype": a.dtype, "prompts": len(per_prompt), "prompts_file": a.prompts, "skip": a.skip,
        "tau": kept / len(all_rounds) if all_rounds else 0.0,
        "tau_uncut": (sum(r["kept"] for r in uncut) / len(uncut)) if uncut else None,
        "mean_accepted": (sum(r["accepted"] for r in all_rounds) / len(all_rounds)) if all_rounds else 0.0,
        "verifications": len(all_rounds), "cut_verifications": len(all_rounds) - len(uncut),
        "tokens": tokens, "target_forwards": spec_fw, "greedy_forwards": greedy_total,
        "forward_saving": greedy_total / spec_fw if spec_fw else None,
        "acceptance": acceptance(all_rounds, a.depth),
        "greedy_match": not mismatches, "mismatches": mismatches,
        "time": {"load_s": t_load, "spec_s": sum(p["spec_s"] for p in per_prompt),
                 "greedy_s": sum(greedy_s), "draft_s": sum(p["draft_s"] for p in per_prompt),
                 "target_s": sum(p["target_s"] for p in per_prompt),
                 "spec_s_per_prompt": sum(p["spec_s"] for p in per_prompt) / len(per_prompt),
                 "threads": torch.get_num_threads()},
        "per_prompt": per_prompt,
    }
    if draft is not None and not a.no_simulate and any(sim_counts):
        acc = [c / n if n else 0.0 for c, n in zip(sim_correct, sim_counts)]
        prod, accept_len = 1.0, 0.0
        for x in acc:
            prod *= x
            accept_len += prod
        report["simulated"] = {"acc_ttt": acc, "accept_len": accept_len, "counts": sim_counts,
                               "outside_draft_vocab": sim_outside}
    acc = report["acceptance"]
    say(f"spec_eval: tau {report['tau']:.3f} tokens per verification (mean accepted "
        f"{report['mean_accepted']:.3f} of {a.depth}), {report['verifications']} verifications, "
        f"{report['tokens']} tokens in {spec_fw} target forwards vs {greedy_total} greedy "
        f"({report['forward_saving']:.2f}x fewer)")
    say("  acceptance given previous: " + " ".join("  -  " if x is None else f"{x:.3f}"
                                                  for x in acc["conditional"]))
    say("  acceptance unconditional:  " + " ".join(f"{x:.3f}" for x in acc["unconditional"]))
    if "simulated" in report:
        s = report["simulated"]
        say("  eaglet acc_ttt (teacher-forced on this text): " + " ".join(f"{x:.3f}" for x in s["acc_ttt"])
            + f"; accept_len {s['accept_len']:.3f} (real mean accepted {report['mean_accepted']:.3f})")
    t = report["time"]
    say(f"  time: {t['spec_s_per_prompt']:.2f} s per prompt speculative (target {t['target_s']:.1f} s, "
        f"draft {t['draft_s']:.1f} s in all), greedy {t['greedy_s']:.1f} s in all, "
        f"{t['threads']} threads")
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1, ensure_ascii=False)
            f.write("\n")
    if a.plot:
        plot_acceptance(a.plot, report)
        say(f"  plot: {a.plot}")
    if mismatches:
        for m in mismatches:
            print(f"spec_eval: MISMATCH: prompt line {m['line']}: speculative output differs from "
                  f"greedy at new token {m['first_difference']} (greedy top-1/top-2 logit margin "
                  f"{m['greedy_margin']})", file=sys.stderr)
        print("spec_eval: FAIL (speculative output is not plain greedy decoding)")
        return 1
    print(f"spec_eval: tau {report['tau']:.3f}, output equals greedy on {len(per_prompt)} prompts: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
