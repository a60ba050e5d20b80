"""Writes the benchmark prompts as token ids, tokenized from the model's own vocabulary, so
that every engine compared processes exactly the same tokens. Tokenized by llama.cpp where
llama-cpp-python is installed (bench/engine); elsewhere (bench/engine-gpu, on a machine
without it) by a byte-level BPE tokenizer built from the GGUF file's vocabulary and merges,
which is what the default model's tokenizer is."""

import json
import sys

model, out = sys.argv[1], sys.argv[2]


class GgufBpe:
    """The `tokenizers` library's byte-level BPE over the vocabulary and merges stored in
    the GGUF file (the form a GPT-2 style tokenizer takes there)."""

    def __init__(self, path):
        import gguf
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        reader = gguf.GGUFReader(path)

        def strings(key):
            field = reader.fields[key]
            return [bytes(field.parts[i]).decode() for i in field.data]

        vocab = {token: i for i, token in enumerate(strings("tokenizer.ggml.tokens"))}
        merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
        self.tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        self.tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        self.tokenizer.decoder = decoders.ByteLevel()

    def tokenize(self, text, add_bos=False):
        return self.tokenizer.encode(text.decode(), add_special_tokens=add_bos).ids


try:
    from llama_cpp import Llama

    llm = Llama(model_path=model, vocab_only=True, verbose=False)
except ImportError:
    llm = GgufBpe(model)
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
