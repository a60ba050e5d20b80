"""Prints bench/engine's and bench/engine-gpu's table: each engine's prefill and decode
tok/s per prompt, and its ratio to the anchor's on the same prompt.

Usage: engine_table.py OURS.jsonl ANCHOR.jsonl   (one JSON object per engine and prompt)
"""

import json
import sys

ours = [json.loads(line) for line in open(sys.argv[1])]
anchor = {r["prompt"]: r for r in map(json.loads, open(sys.argv[2]))}
print(f"{'engine':<36}{'prompt':<7}{'tokens':>7}{'prefill tok/s':>15}{'ratio':>8}{'decode tok/s':>14}{'ratio':>8}")
for name in sorted(anchor, key=lambda n: anchor[n]["prompt_tokens"]):
    a = anchor[name]
    print(f"{a['engine']:<36}{name:<7}{a['prompt_tokens']:>7}{a['prefill_tok_s']:>15.1f}{'1.00x':>8}{a['decode_tok_s']:>14.1f}{'1.00x':>8}")
    for o in (r for r in ours if r["prompt"] == name):
        print(
            f"{o['engine']:<36}{name:<7}{o['prompt_tokens']:>7}{o['prefill_tok_s']:>15.1f}{o['prefill_tok_s'] / a['prefill_tok_s']:>7.2f}x"
            f"{o['decode_tok_s']:>14.1f}{o['decode_tok_s'] / a['decode_tok_s']:>7.2f}x"
        )
