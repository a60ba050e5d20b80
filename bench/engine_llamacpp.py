"""llama.cpp's side of bench/engine: the same token prompts, greedy, streamed, timed the
same way as agent/examples/engine_bench.rs. Prints one JSON object per prompt."""

import json
import statistics
import sys
import time

from llama_cpp import Llama

model, prompts_path, new_tokens, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
threads = int(sys.argv[5]) if len(sys.argv) > 5 else 2
# "gpu": every layer on the GPU (a CUDA build of llama.cpp), with llama.cpp's default batch.
on_gpu = len(sys.argv) > 6 and sys.argv[6] == "gpu"
prompts = json.load(open(prompts_path))
if on_gpu:
    llm = Llama(model_path=model, n_ctx=8192, n_threads=threads, n_batch=2048, n_gpu_layers=-1, verbose=False)
else:
    llm = Llama(model_path=model, n_ctx=8192, n_threads=threads, n_batch=512, verbose=False)
label = "llama.cpp CUDA (Q4_1)" if on_gpu else "llama.cpp (Q4_1)"

for name, tokens in sorted(prompts.items()):
    samples = []
    for run in range(runs + 1):
        llm.reset()  # no prompt cache between runs: every run pays its prefill
        started = time.perf_counter()
        first, generated = None, 0
        for chunk in llm.create_completion(tokens, max_tokens=new_tokens, temperature=0.0, stream=True):
            if chunk["choices"][0]["finish_reason"] is not None:
                continue  # the closing chunk carries no token
            generated += 1
            if first is None:
                first = time.perf_counter()
        finished = time.perf_counter()
        first = first or finished
        if run > 0:
            samples.append((first - started, finished - first, generated))
    prefill = statistics.median(len(tokens) / s[0] for s in samples)
    decode = statistics.median(max(s[2] - 1, 0) / max(s[1], 1e-9) for s in samples)
    print(json.dumps({"engine": label, "prompt": name, "prompt_tokens": len(tokens),
                      "prefill_tok_s": prefill, "decode_tok_s": decode, "new_tokens": samples[0][2]}))
