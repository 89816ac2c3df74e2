#!/usr/bin/env python3
"""A tiny random HF Llama target with a character-level tokenizer and a chat template, written to a
folder, plus a prompts JSONL: the fixture of the speculative-decoding tests (no hub needed).

    python tests/eval/tiny_target.py OUT_DIR [--seed 0]

Writes OUT_DIR/target (config.json, model.safetensors, tokenizer files) and OUT_DIR/prompts.jsonl
(one "conversations", one "messages" and one "text" line, and a line without a user turn).
"""
import argparse
import json
import os
import string

import torch


def make(out, seed=0):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<|im_start|>", "<|im_end|>"]
    chars = sorted(set(string.printable))
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="<|im_end|>",
                                  bos_token="<|im_start|>", additional_special_tokens=specials[1:])
    tok.chat_template = template
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=1024, rms_norm_eps=1e-6, tie_word_embeddings=False,
                      bos_token_id=vocab["<|im_start|>"], eos_token_id=vocab["<|im_end|>"],
                      pad_token_id=0)
    model = LlamaForCausalLM(cfg)
    # Larger weights than HF's 0.02 init: greedy text then varies instead of repeating one token.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.15)
    target = os.path.join(out, "target")
    model.save_pretrained(target)
    tok.save_pretrained(target)
    lines = [
        {"conversations": [{"from": "human", "value": "Tell me about speculative decoding."},
                           {"from": "gpt", "value": "It drafts tokens and verifies them."}]},
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "What is a draft model?"}]},
        {"text": "The quick brown fox jumps over the lazy dog."},
        {"conversations": [{"from": "gpt", "value": "no user turn here"}]},
    ]
    with open(os.path.join(out, "prompts.jsonl"), "w", encoding="utf-8") as f:
        for rec in lines:
            f.write(json.dumps(rec) + "\n")
    return target


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    print(make(a.out, a.seed))
