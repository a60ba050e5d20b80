"""Writes tasks of the learning experiment's suite (bench/tasks/*.json) as RL tasks (JSON Lines):
the request as the user's message, the workspace's files, every agent tool, and the task's check
as a verifier. Checks without a verifier (a file's exact content, text that must be absent) are
skipped, and said so. With --plans, each task also carries a reference plan for ActGuide-RL:
one `read` of each of its files, the first step anyone takes on these tasks, which shows the
content but not the answer.

Usage: python3 bench/rl/from_tasks.py --split train|heldout [--per-family N] [--families a,b] [--plans] > out.jsonl
"""
import argparse
import glob
import json
import sys

TOOLS = ["read", "write", "edit", "ls", "exec"]


def verifier(check):
    kind = check["kind"]
    if kind == "answer_number":
        return {"kind": "number", "value": check["value"]}
    if kind == "answer_contains" and not check.get("none"):
        return {"kind": "all", "checks": [{"kind": "contains", "text": t} for t in check["all"]]}
    if kind == "file_contains" and not check.get("none"):
        return {"kind": "all", "checks": [{"kind": "file_contains", "path": check["path"], "text": t} for t in check["all"]]}
    if kind == "all":
        parts = [verifier(c) for c in check["checks"]]
        return None if None in parts else {"kind": "all", "checks": parts}
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--split", required=True, choices=["train", "heldout"])
    parser.add_argument("--per-family", type=int, default=1)
    parser.add_argument("--families", default="")
    parser.add_argument("--plans", action="store_true")
    args = parser.parse_args()
    wanted = set(filter(None, args.families.split(",")))
    skipped = 0
    for path in sorted(glob.glob("bench/tasks/*.json")):
        taken = 0
        for task in json.load(open(path)):
            if task["split"] != args.split or (wanted and task["family"] not in wanted) or taken >= args.per_family:
                continue
            check = verifier(task["check"])
            if check is None:
                skipped += 1
                continue
            taken += 1
            row = {"id": task["id"], "messages": [{"role": "user", "content": task["request"]}], "verifier": check,
                   "tools": TOOLS, "files": task.get("files", {})}
            if args.plans:
                row["actions"] = [{"tool": "read", "arguments": json.dumps({"path": path})} for path in sorted(row["files"])]
            print(json.dumps(row))
    if skipped:
        print(f"skipped {skipped} task(s) whose check has no verifier", file=sys.stderr)


main()
