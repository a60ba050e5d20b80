"""Writes the benchmark prompts as token ids, tokenized by llama.cpp from the model's own
vocabulary, so both engines process exactly the same tokens."""

import json
import sys

from llama_cpp import Llama

model, out = sys.argv[1], sys.argv[2]
llm = Llama(model_path=model, vocab_only=True, verbose=False)
short = "Explain in a few sentences why the sky is blue, and what sunsets have to do with it."
paragraph = (
    "The history of computing is a story of abstraction layered upon abstraction. Early machines were "
    "programmed by rewiring panels; then came stored programs, assemblers, compilers, operating systems, "
    "and networks that joined machines across the world. "
)
prompts = {}
tokens = llm.tokenize(short.encode(), add_bos=False)
prompts["short"] = tokens[:40] if len(tokens) >= 40 else (tokens * 2)[:40]
long_tokens = llm.tokenize((paragraph * 20).encode(), add_bos=False)
prompts["long"] = long_tokens[:500]
json.dump(prompts, open(out, "w"))
print({name: len(t) for name, t in prompts.items()})
