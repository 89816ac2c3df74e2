#!/usr/bin/env python3
"""An `eaglet export` folder against what the engines' Eagle3 loaders read, without the engines.

The two load_weights functions are re-enacted on the export's tensor names and shapes, from their
code (read 2025-2026, cited per rule):
  SGLang  python/sglang/srt/models/llama_eagle3.py, LlamaForCausalLMEagle3.load_weights: "d2t"
          becomes hot_token_id (d2t + arange), "t2d" is skipped; q/k/v_proj are stacked into
          qkv_proj and gate/up_proj into gate_up_proj; a name is taken as is when it is a
          parameter, else "model." + name; a name that matches no parameter is SKIPPED SILENTLY
          (why a "layers.0." export leaves SGLang's decoder at its initial values).
          Parameters: model.embed_tokens [Vt, H], model.fc [H, 3 Ht], model.midlayer.* (qkv
          input 2H), model.norm [H], lm_head [Vd, H].
          python/sglang/srt/model_executor/model_runner.py: the draft hf_config's
          eagle_config["eagle_aux_hidden_state_layer_ids"] (and use_aux_hidden_state).
  vLLM    vllm/model_executor/models/llama_eagle3.py, Eagle3LlamaForCausalLM.load_weights: "t2d"
          skipped, "d2t" -> draft_id_to_target_id, every name but lm_head gets "model."; embed_tokens
          optional (skipped when absent); LlamaModel.load_weights renames "midlayer." to
          "layers.0." and stacks qkv / gate_up the same way; a name that matches no parameter
          raises (params_dict[name]).
          vllm/v1/worker/gpu_model_runner.py _get_eagle3_aux_layers_from_config: the draft
          hf_config's top-level eagle_aux_hidden_state_layer_ids, else eagle_config's.
Checks: every parameter of both models is loaded completely (stacked shards fill their rows), no
tensor is dropped, dtypes (bf16 weights, int64 d2t, bool t2d), d2t/t2d consistency, config keys.
usage: check_export_loaders.py EXPORT_DIR [--expect-aux 1,14,26] [--no-embeddings]
"""
import argparse
import json
import os
import sys

from safetensors import safe_open

STACKED = [(".qkv_proj", ".q_proj", "q"), (".qkv_proj", ".k_proj", "k"),
           (".qkv_proj", ".v_proj", "v"), (".gate_up_proj", ".gate_proj", 0),
           (".gate_up_proj", ".up_proj", 1)]


def draft_params(cfg, layer):
    """Parameter name (without the model prefix) -> shape, and the rows of each stacked shard."""
    h, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = cfg.get("head_dim") or h // nh
    inter, vt = cfg["intermediate_size"], cfg["vocab_size"]
    ht = cfg.get("target_hidden_size", h)
    p = {
        "embed_tokens.weight": [vt, h],
        "fc.weight": [h, 3 * ht],
        f"{layer}.self_attn.qkv_proj.weight": [(nh + 2 * nkv) * d, 2 * h],
        f"{layer}.self_attn.o_proj.weight": [h, nh * d],
        f"{layer}.mlp.gate_up_proj.weight": [2 * inter, h],
        f"{layer}.mlp.down_proj.weight": [h, inter],
        f"{layer}.input_layernorm.weight": [h],
        f"{layer}.hidden_norm.weight": [h],
        f"{layer}.post_attention_layernorm.weight": [h],
        "norm.weight": [h],
    }
    shard_rows = {"q": nh * d, "k": nkv * d, "v": nkv * d, 0: inter, 1: inter}
    return p, shard_rows


class Loaded:
    """Rows filled per parameter, to check stacked parameters are loaded completely."""

    def __init__(self, params, shard_rows, engine):
        self.params, self.shard_rows, self.engine = params, shard_rows, engine
        self.rows = {}
        self.errors = []

    def load(self, param, shape, shard=None):
        want = self.params[param]
        if shard is None:
            if list(shape) != want:
                self.errors.append(f"{self.engine}: {param} is {want}, the export gives {shape}")
            self.rows[param] = want[0]
        else:
            rows = self.shard_rows[shard]
            if list(shape) != [rows] + want[1:]:
                self.errors.append(f"{self.engine}: shard {shard} of {param} needs "
                                   f"{[rows] + want[1:]}, the export gives {shape}")
            self.rows[param] = self.rows.get(param, 0) + rows

    def missing(self, optional=()):
        return [p for p, s in self.params.items()
                if self.rows.get(p) != s[0] and p not in optional]


def sglang_load(tensors, cfg):
    base, shard_rows = draft_params(cfg, "midlayer")
    params = {"model." + k: v for k, v in base.items()}
    params["lm_head.weight"] = [cfg["draft_vocab_size"], cfg["hidden_size"]]
    st = Loaded(params, shard_rows, "SGLang")
    skipped = []
    for name, shape in tensors.items():
        if "d2t" in name or "t2d" in name:
            continue
        for param_name, weight_name, shard in STACKED:
            if weight_name not in name:
                continue
            n = name.replace(weight_name, param_name)
            p = n if n in params else f"model.{n}"
            if p in params:
                st.load(p, shape, shard)
            else:
                skipped.append(name)
            break
        else:
            p = name if name in params else f"model.{name}"
            if p in params:
                st.load(p, shape)
            else:
                skipped.append(name)
    errors = st.errors + [f"SGLang: skips tensor {n} silently (no such parameter)" for n in skipped]
    errors += [f"SGLang: parameter {p} not loaded (stays at its initial value)" for p in st.missing()]
    return errors


def vllm_load(tensors, cfg):
    base, shard_rows = draft_params(cfg, "layers.0")
    params = dict(base)
    st = Loaded(params, shard_rows, "vLLM")
    errors = []
    has_embed = any("embed_tokens" in n for n in tensors)
    for name, shape in tensors.items():
        if "t2d" in name or "d2t" in name or "lm_head" in name:
            continue  # t2d skipped, d2t -> draft_id_to_target_id, lm_head on the outer model
        n = name  # "model." + name, then AutoWeightsLoader hands LlamaModel the name without it
        if "midlayer." in n:
            n = n.replace("midlayer.", "layers.0.")
        for param_name, weight_name, shard in STACKED:
            if weight_name not in n:
                continue
            n = n.replace(weight_name, param_name)
            if n not in params:
                errors.append(f"vLLM: KeyError {n} (from tensor {name})")
            else:
                st.load(n, shape, shard)
            break
        else:
            if n not in params:
                errors.append(f"vLLM: KeyError {n} (from tensor {name})")
            else:
                st.load(n, shape)
    lm = tensors.get("lm_head.weight")
    if lm is None or list(lm) != [cfg["draft_vocab_size"], cfg["hidden_size"]]:
        errors.append(f"vLLM: lm_head.weight needs [{cfg['draft_vocab_size']}, "
                      f"{cfg['hidden_size']}], the export gives {lm}")
    optional = () if has_embed else ("embed_tokens.weight",)
    errors += st.errors + [f"vLLM: parameter {p} not loaded" for p in st.missing(optional)]
    return errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("export")
    ap.add_argument("--expect-aux", default="")
    ap.add_argument("--no-embeddings", action="store_true")
    a = ap.parse_args()
    errors = []
    cfg = json.load(open(os.path.join(a.export, "config.json")))
    tensors, dtypes = {}, {}
    with safe_open(os.path.join(a.export, "model.safetensors"), "pt") as f:
        for k in f.keys():
            t = f.get_tensor(k)
            tensors[k], dtypes[k] = list(t.shape), str(t.dtype)
        d2t, t2d = f.get_tensor("d2t"), f.get_tensor("t2d")

    # config.json: what both engines build the draft from.
    want = {"architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama",
            "num_hidden_layers": 1, "hidden_act": "silu", "tie_word_embeddings": False,
            "torch_dtype": "bfloat16"}
    for k, v in want.items():
        if cfg.get(k) != v:
            errors.append(f"config.json: {k} is {cfg.get(k)!r}, expected {v!r}")
    for k in ("hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size",
              "vocab_size", "draft_vocab_size", "rms_norm_eps", "rope_theta",
              "max_position_embeddings"):
        if k not in cfg:
            errors.append(f"config.json: {k} missing")
    if errors:
        sys.exit("\n".join(errors))
    if a.expect_aux:
        ids = [int(x) for x in a.expect_aux.split(",")]
        sg = (cfg.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids")
        vl = cfg.get("eagle_aux_hidden_state_layer_ids") or sg
        if sg != ids:
            errors.append(f"SGLang reads eagle_config.eagle_aux_hidden_state_layer_ids = {sg}, "
                          f"expected {ids}")
        if vl != ids:
            errors.append(f"vLLM reads eagle_aux_hidden_state_layer_ids = {vl}, expected {ids}")
        if (cfg.get("eagle_config") or {}).get("use_aux_hidden_state", True) is not True:
            errors.append("eagle_config.use_aux_hidden_state is not true")

    # dtypes: bf16 weights (embed_tokens included), int64 d2t, bool t2d.
    for k, dt in dtypes.items():
        expect = {"d2t": "torch.int64", "t2d": "torch.bool"}.get(k, "torch.bfloat16")
        if dt != expect:
            errors.append(f"model.safetensors: {k} is {dt}, expected {expect}")
    if "embed_tokens.weight" in tensors and a.no_embeddings:
        errors.append("embed_tokens.weight present although exported with --no-embeddings")
    if "embed_tokens.weight" not in tensors and not a.no_embeddings:
        errors.append("embed_tokens.weight missing (TorchSpec's strict load needs it)")
    if tensors.get("d2t") != [cfg["draft_vocab_size"]] or tensors.get("t2d") != [cfg["vocab_size"]]:
        errors.append(f"d2t {tensors.get('d2t')} / t2d {tensors.get('t2d')} do not match "
                      f"draft_vocab_size {cfg['draft_vocab_size']} / vocab_size {cfg['vocab_size']}")
    else:
        import torch
        target = torch.arange(d2t.numel()) + d2t  # SGLang's hot_token_id, vLLM's targets
        if int(t2d.sum()) != d2t.numel() or not bool(t2d[target].all()):
            errors.append("d2t maps draft ids to target ids that t2d does not mark")

    # SGLang strips nothing and skips unknown names: the whole table must load.
    sg_tensors = dict(tensors)
    if a.no_embeddings:  # SGLang shares the target's embedding then (not from this file)
        sg_tensors["embed_tokens.weight"] = [cfg["vocab_size"], cfg["hidden_size"]]
    errors += sglang_load(sg_tensors, cfg)
    errors += vllm_load(tensors, cfg)
    # The old `--vllm` naming, as a check that this test can fail: SGLang must reject it.
    renamed = {k.replace("midlayer.", "layers.0."): v for k, v in sg_tensors.items()}
    if not any("not loaded" in e for e in sglang_load(renamed, cfg)):
        errors.append("self-check: a layers.0. export was not caught as unloaded by SGLang")
    if errors:
        print("\n".join("FAIL " + e for e in errors))
        sys.exit(1)
    print(f"export_loaders: {len(tensors)} tensors load in SGLang and vLLM: PASS")


if __name__ == "__main__":
    main()
