#!/usr/bin/env python3
"""Hugging Face transformers' numbers for bench/gpu_bench (issue #16), on the
same GPU in the same job: writes a 4-layer Llama-3-8B-shaped model with
random weights (32 / 8 heads, head_dim 128, hidden 4096, MLP 14336; a 32000-
token vocabulary instead of 128256, which only the embedding table and the
last token's logits see) as a Hugging Face directory in bfloat16, then times
its forward pass (float32 and bfloat16, SDPA attention, logits of the last
token only) and greedy decode (bfloat16, its own cache) and writes them as
JSON. gpu_bench --model DIR --hf-result FILE loads the same directory and
prints ours against these.

Usage: hf_peer.py MODEL_DIR RESULT_JSON [--tokens 8192] [--steps 20]
"""
import argparse
import json
import os
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM


def timed(fn, reps, warmup=1):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("result")
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=20)
    a = ap.parse_args()
    torch.manual_seed(0)
    if not os.path.exists(os.path.join(a.model_dir, "config.json")):
        cfg = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                          num_hidden_layers=4, num_attention_heads=32, num_key_value_heads=8,
                          head_dim=128, max_position_embeddings=16384, rope_theta=500000.0,
                          rms_norm_eps=1e-5, tie_word_embeddings=False)
        with torch.device("cuda"):
            m = LlamaForCausalLM(cfg)
        m.to(torch.bfloat16).save_pretrained(a.model_dir, safe_serialization=True)
        del m
    out = {"version": transformers.__version__, "torch": torch.__version__,
           "gpu": torch.cuda.get_device_name(), "tokens": a.tokens}
    ids = torch.randint(0, 32000, (1, a.tokens), device="cuda")
    with torch.inference_mode():
        for dtype, key in ((torch.float32, "forward_fp32_tok_s"), (torch.bfloat16, "forward_bf16_tok_s")):
            m = LlamaForCausalLM.from_pretrained(a.model_dir, dtype=dtype,
                                                 attn_implementation="sdpa").cuda().eval()
            t = timed(lambda: m(ids, use_cache=False, logits_to_keep=1), reps=3)
            out[key] = a.tokens / t
            if dtype == torch.bfloat16:
                res = m(ids, use_cache=True, logits_to_keep=1)
                past, nxt = res.past_key_values, res.logits[:, -1].argmax(-1, keepdim=True)
                state = {"past": past, "next": nxt}

                def step():
                    r = m(state["next"], past_key_values=state["past"], use_cache=True)
                    state["past"], state["next"] = r.past_key_values, r.logits[:, -1].argmax(-1, keepdim=True)
                    state["next"].item()

                out["decode_bf16_ms"] = 1e3 * timed(step, reps=a.steps)
            del m
            torch.cuda.empty_cache()
    tmp = a.result + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
    os.replace(tmp, a.result)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
