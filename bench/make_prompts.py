"""Writes the benchmark prompts as token ids, tokenized by llama.cpp from the model's own
vocabulary, so both engines process exactly the same tokens."""

import json
import sys

from llama_cpp import Llama

model, out = sys.argv[1], sys.argv[2]
llm = Llama(model_path=model, vocab_only=True, verbose=False)
# Both prompts stop mid-sentence so that greedy decoding runs on for all 64 new tokens
# instead of ending at once, which would leave nothing to time.
short = (
    "Once upon a time, in a small village by the sea, there lived an old fisherman who had "
    "a secret that nobody in the village knew. Every night, when the moon rose, he"
)
paragraph = (
    "The history of computing is a story of abstraction layered upon abstraction. Early machines were "
    "programmed by rewiring panels; then came stored programs, assemblers, compilers, operating systems, "
    "and networks that joined machines across the world. "
)
prompts = {}
tokens = llm.tokenize(short.encode(), add_bos=False)
prompts["short"] = tokens[:40]
long_tokens = llm.tokenize((paragraph * 20).encode(), add_bos=False)
prompts["long"] = long_tokens[:488] + tokens[:12]
# What an agent client sends first: a system prompt with its tools and skill catalog, ~7,000
# tokens (OpenClaw's first request is 7,267), in a file of its own (fewer runs: it is long).
agent = {"7k": (long_tokens * 15)[:6988] + tokens[:12]}
json.dump(prompts, open(out, "w"))
json.dump(agent, open(out.replace(".json", "_7k.json"), "w"))
print({name: len(t) for name, t in prompts.items()})
