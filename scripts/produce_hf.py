#!/usr/bin/env python3
"""Produces eaglet training data from a real target model with Hugging Face transformers.

For each prompt of a JSONL file the target (an HF folder or a GGUF file) optionally writes the
responses itself (--generate), then runs one forward over prompt + response and the sample is stored
pre-sharded for eaglet (DESIGN §2, by scripts/mooncake_producer.py's ShardWriter, into the dir store
or Mooncake):
  hidden_states       [S, 3*Ht]  outputs of the aux layers, concatenated in ascending layer order
  last_hidden_states  [S, Ht]    the final norm's output (what the logits processor is fed)
  input_ids           [S]        the chat-templated conversation
  loss_mask           [S]        1 on the assistant turns' tokens (their content and end-of-turn
                                 token), 0 on everything else
S is cut to --max-seq-length before the forward. hs and lhs are stored as bf16.

Aux layer ids count layer outputs, as SGLang and TorchSpec do: id i is the output of decoder layer i
(0-based), which is HF's output_hidden_states[i + 1] (entry 0 is the embedding output). The default
[1, N//2 - 1, N - 4] for N layers is SGLang's `set_eagle3_layers_to_capture` (layers_to_capture =
[2, N//2, N - 3], each capturing the input of that layer = the output of the layer before).

Prompt lines: {"conversations": [{"from": "human"|"gpt"|"system", "value": ...}]} (ShareGPT),
{"messages": [{"role": ..., "content": ...}]}, or {"text": ...} (tokenised as is, every token in
the loss mask; with --generate the text is the prompt and the continuation is masked). Keys are
<prefix>_<line index>, so a rerun skips the samples the manifest already has (resume).

The script can also write the target's head for eaglet's model.target (--target-out) and a draft
config for model.config (--draft-config-out); without --input it writes only those.

Example (SmolLM2-135M-Instruct as GGUF, 3 SP ranks, TTT 3; docs/DATA.md §10):
  python scripts/produce_hf.py --target SmolLM2-135M-Instruct.Q4_1.gguf --input prompts.jsonl \\
      --dir runs/smol/store --sp-size 3 --ttt-length 3 --max-seq-length 512 --generate \\
      --max-new-tokens 128 --target-out runs/smol/target --draft-config-out runs/smol/draft.json
"""

import argparse
import itertools
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mooncake_producer as mp  # noqa: E402  (the shared writer, scripts/mooncake_producer.py)

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
         "chatgpt": "assistant", "model": "assistant", "system": "system"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class BadSample(ValueError):
    """A prompt line that cannot become a sample (the caller adds which line)."""


def say(msg):
    print(f"produce_hf: {msg}", file=sys.stderr, flush=True)


# --- prompts ---------------------------------------------------------------------------------------
def read_prompts(path, skip, limit):
    """(line index, parsed JSON or the exception) of the non-blank lines [skip, skip + limit)."""
    index = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            if index >= skip and (limit is None or index < skip + limit):
                try:
                    yield index, json.loads(line)
                except json.JSONDecodeError as e:
                    yield index, e
            index += 1


def count_prompts(path, skip, limit):
    with open(path, encoding="utf-8") as f:
        n = sum(1 for line in f if line.strip())
    n = max(0, n - skip)
    return n if limit is None else min(n, limit)


def parse_record(record):
    """("chat", [{"role", "content"}]) or ("text", str). Leading assistant turns are dropped (they
    answer a prompt the sample does not have)."""
    if not isinstance(record, dict):
        raise BadSample("expected a JSON object")
    if "text" in record and isinstance(record["text"], str):
        return "text", record["text"]
    turns = record.get("conversations", record.get("messages"))
    if not isinstance(turns, list) or not turns:
        raise BadSample("no \"conversations\", \"messages\" or \"text\"")
    messages = []
    for k, turn in enumerate(turns):
        role = turn.get("from", turn.get("role")) if isinstance(turn, dict) else None
        content = turn.get("value", turn.get("content")) if isinstance(turn, dict) else None
        if role not in ROLES or not isinstance(content, str):
            raise BadSample(f"turn {k}: expected a role in {sorted(ROLES)} and a string "
                            f"content, got {json.dumps(turn)[:120]}")
        messages.append({"role": ROLES[role], "content": content})
    while messages and messages[0]["role"] == "assistant":
        messages.pop(0)
    if not messages:
        raise BadSample("only assistant turns")
    return "chat", messages


# --- tokens and the loss mask ----------------------------------------------------------------------
def render(tokenizer, messages, generation_prompt):
    """The conversation as the chat template writes it."""
    import jinja2

    if not tokenizer.chat_template:
        sys.exit("produce_hf: the tokenizer has no chat template; give --chat-template FILE")
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=generation_prompt)
    except jinja2.TemplateError as e:  # the template's raise_exception(), e.g. roles not alternating
        raise BadSample(f"the chat template refuses the conversation: {e}") from None


def chat_tokens(tokenizer, messages):
    """Token ids of the templated conversation and its loss mask.

    Assistant turn i spans, in the templated text, from the end of the conversation before it
    rendered with the generation prompt to the end of the conversation up to it, trailing
    whitespace left out: its content and the end-of-turn marker the target generates. The text is
    tokenised once; a token is in the mask when its characters overlap such a span. The template
    must render each conversation prefix as a prefix of the whole (true of common templates)."""
    text = render(tokenizer, messages, False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:i], True)
        upto = render(tokenizer, messages[: i + 1], False)
        if not (upto.startswith(before) and text.startswith(upto)):
            raise BadSample(f"the chat template does not render turn {i} as a prefix of "
                            "the conversation, so its tokens cannot be located")
        spans.append((len(before), len(upto.rstrip())))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(b < e_tok and s_tok < e for b, e in spans))
            for s_tok, e_tok in enc["offset_mapping"]]
    return enc["input_ids"], mask


class Generator:
    """The target writing responses: greedy, or sampled with --temperature / --top-p; up to
    --generate-batch prompts at a time (left-padded, one generate call)."""

    def __init__(self, model, tokenizer, a):
        eos = model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
            eos.append(tokenizer.eos_token_id)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos or [0])[0]
        sample = a.temperature > 0
        # Given explicitly, so the model's generation_config (e.g. a default top_k) does not add to it.
        self.options = dict(do_sample=sample, eos_token_id=eos or None, pad_token_id=pad)
        if sample:
            self.options.update(temperature=a.temperature, top_p=a.top_p, top_k=0)
        self.model, self.tokenizer, self.device = model, tokenizer, a.device
        self.max_new_tokens, self.max_seq_length = a.max_new_tokens, a.max_seq_length
        self.eos, self.pad = set(eos), pad
        self.tokens = 0  # generated so far
        self.seconds = 0.0

    def ids(self, prompts):
        """New token ids after each prompt (lists of ids): at most --max-new-tokens, none past the
        cut, ending at the first end-of-sequence token (kept). The prompts go through one generate
        call, left-padded with an attention mask (transformers derives the positions from it)."""
        budgets = [min(self.max_new_tokens, self.max_seq_length - len(p)) for p in prompts]
        out = [[] for _ in prompts]
        live = [i for i, b in enumerate(budgets) if b > 0]
        if not live:
            return out
        start = time.perf_counter()
        width = max(len(prompts[i]) for i in live)
        x = torch.full((len(live), width), self.pad, dtype=torch.int64)
        mask = torch.zeros_like(x)
        for row, i in enumerate(live):
            n = len(prompts[i])
            x[row, width - n:] = torch.tensor(prompts[i], dtype=torch.int64)
            mask[row, width - n:] = 1
        with torch.inference_mode():
            gen = self.model.generate(x.to(self.device), attention_mask=mask.to(self.device),
                                      max_new_tokens=max(budgets[i] for i in live), **self.options)
        for row, i in enumerate(live):
            new = gen[row, width:].tolist()[: budgets[i]]
            stop = next((k for k, t in enumerate(new) if t in self.eos), None)
            out[i] = new if stop is None else new[: stop + 1]  # a finished row is padded after it
            self.tokens += len(out[i])
        self.seconds += time.perf_counter() - start
        return out


def sample_tokens(jobs, tokenizer, generator):
    """(input_ids, loss_mask), or the BadSample, of each parsed prompt line (kind, content).

    With a generator the target answers them first, all together: every assistant turn is replaced
    by the target's answer to the conversation before it (earlier turns already replaced), and a
    conversation ending without an assistant turn gets one appended; one batched generate call per
    round of turns. The texts are then templated like dataset answers."""
    out = [None] * len(jobs)
    pending = {}  # job -> its messages, None where the target still has to answer
    for j, (kind, content) in enumerate(jobs):
        if kind == "text":
            ids = tokenizer(content, add_special_tokens=True)["input_ids"]
            out[j] = (ids, [1] * len(ids))
        elif generator is None:
            pending[j] = content
        else:
            turns = [None if m["role"] == "assistant" else m for m in content]
            pending[j] = turns + ([None] if content[-1]["role"] != "assistant" else [])
    if generator is not None:
        texts = [j for j, (kind, _) in enumerate(jobs) if kind == "text"]
        for j, new in zip(texts, generator.ids([out[j][0] for j in texts])):
            ids = out[j][0]
            out[j] = (ids + new, [0] * len(ids) + [1] * len(new))
        while True:
            asks = []  # (job, turn, prompt ids)
            for j, turns in pending.items():
                if out[j] is not None or None not in turns:
                    continue
                t = turns.index(None)
                try:
                    text = render(tokenizer, turns[:t], True)
                except BadSample as e:
                    out[j] = e
                    continue
                asks.append((j, t, tokenizer(text, add_special_tokens=False)["input_ids"]))
            if not asks:
                break
            for (j, t, _), new in zip(asks, generator.ids([p for _, _, p in asks])):
                reply = tokenizer.decode(new, skip_special_tokens=True)
                pending[j][t] = {"role": "assistant", "content": reply}
    for j, messages in pending.items():
        if out[j] is None:
            try:
                out[j] = chat_tokens(tokenizer, messages)
            except BadSample as e:
                out[j] = e
    return out


# --- the target ------------------------------------------------------------------------------------
def load_target(path, dtype, device, chat_template):
    """(model, tokenizer) of an HF folder or a GGUF file (transformers dequantises it to dtype)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = {}
    if os.path.isfile(path) and path.endswith(".gguf"):
        path, kw["gguf_file"] = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    tokenizer = AutoTokenizer.from_pretrained(path, **kw)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kw).to(device).eval()
    if chat_template:
        with open(chat_template, encoding="utf-8") as f:
            tokenizer.chat_template = f.read()
    return model, tokenizer


def text_config(model):
    cfg = model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def aux_layer_ids(spec, num_layers):
    """The three aux layer ids (output-of-layer ids, ascending) from --aux-layers or the default."""
    ids = [int(x) for x in spec.split(",")] if spec else [1, num_layers // 2 - 1, num_layers - 4]
    where = "--aux-layers" if spec else f"the default [1, N//2-1, N-4] for N={num_layers} layers"
    if len(ids) != 3 or len(set(ids)) != 3:
        sys.exit(f"produce_hf: {where} gives {ids}: eaglet's draft takes 3 distinct aux layers"
                 + ("" if spec else "; give --aux-layers"))
    if min(ids) < 0 or max(ids) > num_layers - 2:
        sys.exit(f"produce_hf: {where} gives {ids}: ids must lie in [0, {num_layers - 2}] (the "
                 f"output of the last layer, {num_layers - 1}, only exists after the final norm)")
    return sorted(ids)


def capture(model, ids, aux, device):
    """(hs [S, 3*Ht], lhs [S, Ht]) of one forward of the decoder (no lm_head) over ids."""
    x = torch.tensor([ids], device=device)
    with torch.inference_mode():
        out = model.base_model(input_ids=x, output_hidden_states=True, use_cache=False)
    # hidden_states[0] is the embedding output, [i + 1] the output of layer i (its last entry is
    # last_hidden_state, after the final norm).
    hs = torch.cat([out.hidden_states[i + 1][0] for i in aux], dim=-1)
    return hs, out.last_hidden_state[0]


def write_target_head(model, out_dir, dtype, source):
    """eaglet's model.target folder: config.json and the embedding, final norm and (untied) lm_head."""
    from safetensors.torch import save_file

    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    tied = head.data_ptr() == emb.data_ptr()
    norm = model.base_model.norm.weight
    tensors = {"model.embed_tokens.weight": emb, "model.norm.weight": norm}
    if not tied:
        tensors["lm_head.weight"] = head
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in tensors.items()}
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # the weights here are dequantised
    config.update(tie_word_embeddings=tied, dtype=str(dtype).removeprefix("torch."),
                  eaglet_head_of=os.path.abspath(source))
    for key in ("hidden_size", "vocab_size", "rms_norm_eps"):
        if key not in text_config(model).to_dict():
            sys.exit(f"produce_hf: the target's config has no {key}, which eaglet's model.target needs")
    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return tied


def rope_settings(cfg):
    """(rope_theta, rope_scaling or None) from a transformers 4 or 5 config."""
    params = dict(getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {})
    theta = params.pop("rope_theta", None) or getattr(cfg, "rope_theta", None) or 10000.0
    kind = params.get("rope_type", params.get("type"))
    return float(theta), (params if kind not in (None, "default") else None)


def draft_config(model, draft_vocab_size, aux):
    """An Eagle3 draft config (eaglet's model.config) sized from the target's config; the aux layer
    ids the data is captured at go where SGLang (eagle_config) and vLLM (top level) read them."""
    cfg = text_config(model)
    heads = cfg.num_attention_heads
    theta, scaling = rope_settings(cfg)
    vocab = cfg.vocab_size
    return {
        "architectures": ["LlamaForCausalLMEagle3"],
        "model_type": "llama",
        "num_hidden_layers": 1,
        "hidden_size": cfg.hidden_size,
        "num_attention_heads": heads,
        "num_key_value_heads": getattr(cfg, "num_key_value_heads", None) or heads,
        "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
        "intermediate_size": cfg.intermediate_size,
        "vocab_size": vocab,
        "draft_vocab_size": min(draft_vocab_size or 32000, vocab),
        "target_hidden_size": cfg.hidden_size,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": theta,
        "rope_scaling": scaling,
        "max_position_embeddings": cfg.max_position_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "eagle_config": {"eagle_aux_hidden_state_layer_ids": aux},
        "eagle_aux_hidden_state_layer_ids": aux,
    }


# --- the run ---------------------------------------------------------------------------------------
def manifest_keys(path, a, hidden):
    """Keys already in the manifest (complete lines); exits when one was written for another layout."""
    keys = set()
    if not os.path.exists(path):
        return keys
    want = {"sp_size": a.sp_size, "ttt_length": a.ttt_length, "max_seq_length": a.max_seq_length,
            "hidden_size": hidden}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.endswith("\n") or not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            for field, value in want.items():
                if entry.get(field) != value:
                    sys.exit(f"produce_hf: {path}:{n}: {field}={entry.get(field)} but this run "
                             f"writes {field}={value}; use another manifest")
            keys.add(entry.get("key"))
    return keys


def skip_bad(a, index, error, prog):
    """A prompt line eaglet cannot use: the run stops (--on-error fail) or goes on without it."""
    problem = f"{a.input}: prompt line {index} (0-based, blank lines not counted): {error}"
    if a.on_error == "fail":
        sys.exit(f"produce_hf: {problem} (--on-error skip goes on)")
    say(f"WARNING: skipped {problem}")
    prog.invalid += 1


def duration(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Counts and rates; a line on stderr every --progress-interval seconds."""

    def __init__(self, total, interval):
        self.total, self.interval = total, interval
        self.start = self.last = time.perf_counter()
        self.done = self.written = self.tokens = self.resumed = 0
        self.empty = self.invalid = self.cut = 0
        self.forward_s = self.write_s = 0.0

    def rates(self):
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        return elapsed, self.written / elapsed, self.tokens / elapsed

    def tick(self, final=False):
        now = time.perf_counter()
        if not final and now - self.last < self.interval:
            return
        self.last = now
        elapsed, sps, tps = self.rates()
        per_sample = elapsed / max(self.done - self.resumed, 1)
        eta = per_sample * (self.total - self.done)
        say(f"{self.done}/{self.total} prompts ({self.written} written, {self.resumed} resumed), "
            f"{sps:.2f} samples/s, {tps:.0f} tokens/s, ETA {duration(eta)}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--target", required=True, help="HF model folder or .gguf file")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device of the target (default: cuda when there is one)")
    p.add_argument("--dtype", choices=sorted(DTYPES),
                   help="dtype of the target's forward and generation (default: bfloat16 on a GPU, "
                   "float32 on the CPU)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    p.add_argument("--chat-template", help="Jinja chat template file replacing the tokenizer's")
    out = p.add_argument_group("outputs for eaglet's config")
    out.add_argument("--target-out", help="write the target's head here (model.target)")
    out.add_argument("--head-dtype", choices=sorted(DTYPES), default="bfloat16",
                     help="dtype of the tensors in --target-out")
    out.add_argument("--draft-config-out", help="write a draft config.json here (model.config)")
    out.add_argument("--draft-vocab-size", type=int, default=0,
                     help="draft_vocab_size of that config (default: min(32000, vocab_size))")
    src = p.add_argument_group("samples")
    src.add_argument("--input", help="prompt JSONL (without it only the outputs above are written)")
    src.add_argument("--skip", type=int, default=0, help="skip the first N prompt lines")
    src.add_argument("--limit", type=int, help="use at most N prompt lines")
    src.add_argument("--key-prefix", help="keys are PREFIX_<line index> (default: the input's name)")
    src.add_argument("--on-error", choices=["fail", "skip"], default="fail",
                     help="a prompt line that cannot be used: stop, or warn and go on")
    src.add_argument("--aux-layers", help="three output-of-layer ids, e.g. 1,14,26 "
                     "(default: SGLang's [1, N//2-1, N-4])")
    gen = p.add_argument_group("responses written by the target")
    gen.add_argument("--generate", action="store_true",
                     help="the target answers every assistant turn (or adds one) itself")
    gen.add_argument("--max-new-tokens", type=int, default=512)
    gen.add_argument("--generate-batch", type=int, default=8,
                     help="prompts the target answers together (left-padded; 1: one at a time). "
                          "Greedy answers equal one-at-a-time ones up to fp rounding at near-ties; "
                          "sampling is seeded per batch (seed + its first line index)")
    gen.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0, help="sampling seed (per batch: seed + its first line index)")
    lay = p.add_argument_group("layout (must match the training run)")
    lay.add_argument("--sp-size", type=int, help="P = parallel.ulysses * parallel.ring")
    lay.add_argument("--ttt-length", type=int, help="T = training.ttt_length")
    lay.add_argument("--max-seq-length", type=int, help="data.max_seq_length (samples are cut)")
    lay.add_argument("--manifest", help="manifest to append to (default with --dir: DIR/manifest.jsonl)")
    p.add_argument("--progress-interval", type=float, default=10.0, help="seconds between progress lines")
    mp.add_sink_args(p, rdma_device_flag="--mooncake-device")
    a = p.parse_args()
    if a.input:
        if None in (a.sp_size, a.ttt_length, a.max_seq_length):
            p.error("--input needs --sp-size, --ttt-length and --max-seq-length")
        if a.generate_batch < 1:
            p.error("--generate-batch must be >= 1")
        if a.sp_size < 1 or a.ttt_length < 0 or a.max_seq_length < 1:
            p.error("--sp-size >= 1, --ttt-length >= 0 and --max-seq-length >= 1 are required")
        a.manifest = a.manifest or (os.path.join(a.dir, "manifest.jsonl") if a.dir else None)
        if not a.manifest:
            p.error("--manifest is required with Mooncake (without --dir)")
    elif not (a.target_out or a.draft_config_out):
        p.error("nothing to do: give --input, --target-out or --draft-config-out")
    if a.threads:
        torch.set_num_threads(a.threads)
    a.dtype = a.dtype or ("float32" if a.device == "cpu" else "bfloat16")

    start = time.perf_counter()
    model, tokenizer = load_target(a.target, DTYPES[a.dtype], a.device, a.chat_template)
    cfg = text_config(model)
    say(f"target {a.target}: {type(model).__name__}, {cfg.num_hidden_layers} layers, hidden "
        f"{cfg.hidden_size}, vocab {cfg.vocab_size}, {a.dtype} on {a.device}, loaded in "
        f"{time.perf_counter() - start:.1f} s")
    aux = aux_layer_ids(a.aux_layers, cfg.num_hidden_layers)
    if a.target_out:
        tied = write_target_head(model, a.target_out, DTYPES[a.head_dtype], a.target)
        say(f"wrote {a.target_out} (embedding, norm{'' if tied else ', lm_head'}; "
            f"tie_word_embeddings={str(tied).lower()}): model.target")
    if a.draft_config_out:
        draft = draft_config(model, a.draft_vocab_size, aux)
        with open(a.draft_config_out, "w") as f:
            json.dump(draft, f, indent=2)
        heads, kv = draft["num_attention_heads"], draft["num_key_value_heads"]
        ulysses = [u for u in range(1, kv + 1) if heads % u == 0 and kv % u == 0]
        say(f"wrote {a.draft_config_out}: model.config ({heads} query / {kv} KV heads: "
            f"parallel.ulysses in {ulysses})")
        scaling = draft["rope_scaling"]
        kind = scaling and scaling.get("rope_type", scaling.get("type"))
        if kind and kind not in ("linear", "llama3"):
            say(f"WARNING: rope_scaling type {kind!r}: eaglet supports none, linear and llama3")
    if not a.input:
        return

    prefix = mp.sanitize_key(a.key_prefix or os.path.splitext(os.path.basename(a.input))[0])
    done_keys = manifest_keys(a.manifest, a, cfg.hidden_size)
    sink = mp.open_sink(a)
    writer = mp.ShardWriter(sink, a.manifest, a.sp_size, a.ttt_length, a.max_seq_length)
    generator = Generator(model, tokenizer, a) if a.generate else None
    say(f"aux layers {aux} (HF hidden_states {[i + 1 for i in aux]}), last hidden state after the "
        f"final norm; P={a.sp_size} T={a.ttt_length} max_seq_length={a.max_seq_length}; "
        f"{len(done_keys)} samples already in {a.manifest}")

    prog = Progress(count_prompts(a.input, a.skip, a.limit), a.progress_interval)
    prompts = read_prompts(a.input, a.skip, a.limit)
    batch = a.generate_batch if generator is not None else 1
    while chunk := list(itertools.islice(prompts, batch)):
        jobs = []  # (line index, key, (kind, content))
        for index, record in chunk:
            prog.done += 1
            key = f"{prefix}_{index}"
            if key in done_keys:
                prog.resumed += 1
                continue
            try:
                if isinstance(record, Exception):
                    raise BadSample(f"not valid JSON: {record}")
                jobs.append((index, key, parse_record(record)))
            except BadSample as e:
                skip_bad(a, index, e, prog)
        if not jobs:
            continue
        if generator is not None:
            torch.manual_seed(a.seed + jobs[0][0])
        for (index, key, _), result in zip(jobs, sample_tokens([j[2] for j in jobs], tokenizer,
                                                                generator)):
            if isinstance(result, BadSample):
                skip_bad(a, index, result, prog)
                continue
            ids, mask = result
            if len(ids) > a.max_seq_length:
                ids, mask = ids[: a.max_seq_length], mask[: a.max_seq_length]
                prog.cut += 1
            if not any(mask):
                prog.empty += 1  # eaglet would neutralise it: not worth storing
                continue
            t0 = time.perf_counter()
            hs, lhs = capture(model, ids, aux, a.device)
            t1 = time.perf_counter()
            writer.write(key, hs, ids, lhs, mask)
            prog.write_s += time.perf_counter() - t1
            prog.forward_s += t1 - t0
            prog.written += 1
            prog.tokens += len(ids)
        prog.tick()
    prog.tick(final=True)
    sink.close()

    elapsed, sps, tps = prog.rates()
    gen_part = ""
    if generator is not None:
        gen_part = (f"; generated {generator.tokens} tokens in {generator.seconds:.1f} s "
                    f"({generator.tokens / max(generator.seconds, 1e-9):.1f} tokens/s)")
    print(f"produce_hf: wrote {prog.written} samples ({prog.tokens} tokens) in {elapsed:.1f} s: "
          f"{sps:.2f} samples/s, {tps:.0f} tokens/s; forward {prog.forward_s:.1f} s, writing "
          f"{prog.write_s:.1f} s{gen_part}; skipped {prog.resumed} already in the manifest, "
          f"{prog.empty} without loss tokens, {prog.invalid} invalid; {prog.cut} cut to "
          f"max_seq_length; manifest {a.manifest}", flush=True)
    mp.hold_if_asked(a, "produce_hf")


if __name__ == "__main__":
    main()
