"""The client side of bench/engine-concurrency: streamed OpenAI chat requests against our
server and llama.cpp's, timed the same way. Standard library only.

  engine_concurrency.py streams N OURS_URL TOKEN LLAMA_URL   one JSON line per engine
  engine_concurrency.py prefix 1 OURS_URL TOKEN LLAMA_URL    one JSON line per engine
  engine_concurrency.py report < results.jsonl               the table, with ratios
"""

import json
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request

NEW_TOKENS = 64
TOPICS = ["rivers", "bread", "the moon", "bicycles", "volcanoes", "chess", "bees", "glass",
          "trains", "tea", "maps", "whales", "paper", "clocks", "salt", "kites"]


def stream_chat(url, headers, model, messages):
    """One streamed, greedy chat. Returns (seconds to the first token, seconds in all, tokens
    generated, prompt tokens, the reply's text)."""
    body = {"model": model, "messages": messages, "max_tokens": NEW_TOKENS, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    request = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={**headers, "Content-Type": "application/json"})
    started = time.perf_counter()
    first, pieces, usage, text = None, 0, None, []
    try:
        response = urllib.request.urlopen(request, timeout=1800)
    except urllib.error.HTTPError as error:
        sys.exit(f"{url}: HTTP {error.code}: {error.read().decode(errors='replace')[:500]}")
    with response:
        for line in response:
            line = line.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    text.append(choice["delta"]["content"])
                    pieces += 1
                    if first is None:
                        first = time.perf_counter()
    finished = time.perf_counter()
    tokens = usage["completion_tokens"] if usage else pieces
    return (first or finished) - started, finished - started, tokens, (usage or {}).get("prompt_tokens"), "".join(text)


def model_of(url, headers):
    with urllib.request.urlopen(urllib.request.Request(url + "/v1/models", headers=headers)) as r:
        return json.load(r)["data"][0]["id"]


def concurrent(url, headers, model, conversations):
    """Runs the conversations at once; returns per-request results and the wall time."""
    results = [None] * len(conversations)

    def run(i):
        results[i] = stream_chat(url, headers, model, conversations[i])

    workers = [threading.Thread(target=run, args=(i,)) for i in range(len(conversations))]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return results, time.perf_counter() - started


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def streams(n, engines):
    # Distinct questions from the first word on, so that no prompt is another's prefix.
    conversations = [[{"role": "user", "content": f"Question {i}: write three sentences about {TOPICS[i % len(TOPICS)]}."}]
                     for i in range(n)]
    for name, url, headers in engines:
        model = model_of(url, headers)
        stream_chat(url, headers, model, [{"role": "user", "content": "Warm up."}])
        results, wall = concurrent(url, headers, model, conversations)
        first = [r[0] for r in results]
        tokens = sum(r[2] for r in results)
        print(json.dumps({"bench": "streams", "engine": name, "streams": n, "tokens": tokens, "wall_s": wall,
                          "tok_s": tokens / wall, "ttft_p50_s": percentile(first, 50),
                          "ttft_p99_s": percentile(first, 99)}), flush=True)


def catalog():
    """A system prompt like an agent client's: tools, rules and a long skill catalog."""
    lines = ["You are an agent working in the user's workspace. Tools: read, write, edit, ls, exec.",
             "Read a skill's file before you use it. Answer briefly.", "<available_skills>"]
    words = ["parse", "render", "audit", "index", "merge", "sync", "lint", "plot", "trace", "pack"]
    subjects = ["csv files", "markdown", "git history", "json logs", "images", "sql dumps", "configs", "tests"]
    i = 0
    # ~16,500 characters: about 6,000 tokens of this model's vocabulary.
    while sum(len(line) for line in lines) < 16500:
        verb, subject = words[i % len(words)], subjects[(i // len(words)) % len(subjects)]
        lines.append(f"<skill name=\"{verb}-{subject.replace(' ', '-')}-{i}\" path=\"skills/{verb}-{i}/SKILL.md\">"
                     f"How to {verb} {subject} step by step (variant {i}), with checks.</skill>")
        i += 1
    lines.append("</available_skills>")
    return "\n".join(lines)


def prefix(engines):
    system = catalog()
    for name, url, headers in engines:
        model = model_of(url, headers)
        stream_chat(url, headers, model, [{"role": "user", "content": "Warm up."}])
        conversation = [{"role": "system", "content": system}, {"role": "user", "content": "Which skill packs csv files?"}]
        first = stream_chat(url, headers, model, conversation)
        # The same conversation's next turn (an agent's next step): its whole history is
        # the first request and its reply.
        conversation += [{"role": "assistant", "content": first[4]}, {"role": "user", "content": "And which one parses json logs?"}]
        next_turn = stream_chat(url, headers, model, conversation)
        # Another user's question under the same system prompt.
        second = stream_chat(url, headers, model, [{"role": "system", "content": system},
                                                   {"role": "user", "content": "Which skill lints markdown?"}])
        print(json.dumps({"bench": "prefix", "engine": name, "prompt_tokens": first[3],
                          "first_ttft_s": first[0], "next_turn_ttft_s": next_turn[0], "second_ttft_s": second[0]}), flush=True)


def report():
    rows = [json.loads(line) for line in sys.stdin if line.strip()]
    print(f"{'streams':>8}{'engine':>12}{'tokens':>8}{'agg tok/s':>11}{'ratio':>8}{'TTFT p50 s':>12}{'p99 s':>9}")
    for n in sorted({r["streams"] for r in rows if r["bench"] == "streams"}):
        by = {r["engine"]: r for r in rows if r["bench"] == "streams" and r["streams"] == n}
        for name in ("llama.cpp", "skillhive"):
            r = by[name]
            ratio = r["tok_s"] / by["llama.cpp"]["tok_s"]
            print(f"{n:>8}{name:>12}{r['tokens']:>8}{r['tok_s']:>11.1f}{ratio:>7.2f}x{r['ttft_p50_s']:>12.2f}{r['ttft_p99_s']:>9.2f}")
    prefix_rows = {r["engine"]: r for r in rows if r["bench"] == "prefix"}
    if prefix_rows:
        print(f"\nshared system prompt ({prefix_rows['skillhive']['prompt_tokens']} prompt tokens): time to first token")
        print(f"{'engine':>12}{'first s':>10}{'next turn s':>13}{'other user s':>14}")
        for name in ("llama.cpp", "skillhive"):
            r = prefix_rows[name]
            print(f"{name:>12}{r['first_ttft_s']:>10.2f}{r['next_turn_ttft_s']:>13.2f}{r['second_ttft_s']:>14.2f}")
        ours, theirs = prefix_rows["skillhive"], prefix_rows["llama.cpp"]
        print(f"ours / llama.cpp: first {ours['first_ttft_s'] / theirs['first_ttft_s']:.2f}x, "
              f"next turn {ours['next_turn_ttft_s'] / theirs['next_turn_ttft_s']:.2f}x, "
              f"other user {ours['second_ttft_s'] / theirs['second_ttft_s']:.2f}x (lower is faster)")


def main():
    mode = sys.argv[1]
    if mode == "report":
        return report()
    n, ours_url, token, llama_url = int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    engines = [("llama.cpp", llama_url, {}), ("skillhive", ours_url, {"Authorization": f"Bearer {token}"})]
    if mode == "streams":
        streams(n, engines)
    else:
        prefix(engines)


if __name__ == "__main__":
    main()
