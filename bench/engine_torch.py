"""The GPU anchor for bench/engine-gpu: PyTorch (transformers, eager, KV cache on) running
the same GGUF file, expanded by transformers to BF16, on the same token prompts. Prefill is
the time to the first new token; decode the rate of the tokens after it (greedy, a fixed
number of new tokens). Prints one JSON object per prompt, as engine_bench does.

Usage: engine_torch.py MODEL.gguf PROMPTS.json NEW_TOKENS RUNS
"""

import json
import os
import statistics
import sys
import time

import torch
from transformers import AutoModelForCausalLM

model_path, prompts_path, new_tokens, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
folder, name = os.path.split(os.path.abspath(model_path))
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16).to("cuda").eval()


def generate(ids, count):
    """Seconds to generate exactly `count` new tokens after `ids`."""
    torch.cuda.synchronize()
    started = time.perf_counter()
    with torch.no_grad():
        model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=count,
            min_new_tokens=count,
            do_sample=False,
            pad_token_id=0,
        )
    torch.cuda.synchronize()
    return time.perf_counter() - started


for prompt, tokens in json.load(open(prompts_path)).items():
    ids = torch.tensor([tokens], device="cuda")
    generate(ids, new_tokens)  # warm-up, not reported
    samples = [(generate(ids, 1), generate(ids, new_tokens)) for _ in range(runs)]
    prefill = statistics.median(len(tokens) / first for first, _ in samples)
    decode = statistics.median((new_tokens - 1) / (whole - first) for first, whole in samples)
    print(
        json.dumps(
            {
                "engine": f"pytorch {torch.__version__} (bf16)",
                "prompt": prompt,
                "prompt_tokens": len(tokens),
                "prefill_tok_s": prefill,
                "decode_tok_s": decode,
                "new_tokens": new_tokens,
            }
        ),
        flush=True,
    )
