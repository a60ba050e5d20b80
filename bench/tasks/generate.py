"""Writes the learning task suite: one JSON file per family in this directory.

Every expected answer is computed from the generated data, never typed by hand, and each
family draws from its own seeded random generator, so running the script again gives
byte-identical files. Train and heldout tasks of a family use different file names,
different content and differently worded requests, so that what is learnt on the train
tasks has to generalise to be of use on the heldout ones.

Run it from anywhere: python3 bench/tasks/generate.py
"""

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRAIN, HELDOUT = 5, 3


def task(family, split, index, request, files, check, solution, wrong):
    return {
        "id": f"{family}-{split}-{index}",
        "family": family,
        "split": split,
        "request": request,
        "files": files,
        "check": check,
        "solution": solution,
        "wrong": wrong,
    }


def answer(text):
    return {"answer": str(text), "files": {}}


def edits(files, text="Done."):
    return {"answer": text, "files": files}


def number(value):
    return {"kind": "answer_number", "value": value}


def contains(all_, none=()):
    return {"kind": "answer_contains", "all": list(all_), "none": list(none)}


def lines(rows):
    """Joins lines into file content that ends with a newline, as `wc -l` expects."""
    return "".join(f"{row}\n" for row in rows)


def splits():
    """The split and the index within it of each task of a family, train first."""
    return [("train", i + 1) for i in range(TRAIN)] + [("heldout", i + 1) for i in range(HELDOUT)]


def assert_unrelated(wanted, unwanted):
    """An `answer_contains` check is only fair when no refused string is part of a required
    one or the other way round, because the comparison is by substring."""
    for w in wanted:
        for u in unwanted:
            assert w.lower() not in u.lower() and u.lower() not in w.lower(), (w, u)


# Word pools shared by several families.
FIRST_NAMES = ["alice", "bruno", "chen", "dana", "emeka", "farah", "goran", "hana", "ivan", "jonas", "kemal", "lena",
               "mateo", "nadia", "omar", "priya", "quinn", "rosa", "sven", "tara", "uma", "victor", "wen", "yusuf"]
ITEMS = ["pen", "stapler", "notebook", "marker", "folder", "eraser", "ruler", "tape", "scissors", "binder", "clip",
         "envelope", "lamp", "mug", "cable", "charger", "mouse", "keyboard", "monitor", "headset"]
CITIES = ["lisbon", "oslo", "lyon", "porto", "graz", "turin", "ghent", "leeds", "malmo", "bergen", "krakow", "seville"]


def csv_count():
    family = "csv-count"
    rng = random.Random(family)
    counts = rng.sample(range(3, 21), TRAIN + HELDOUT)

    def orders(n):
        return ["id,item,qty"] + [f"{100 + i},{rng.choice(ITEMS)},{rng.randint(1, 9)}" for i in range(n)]

    def users(n):
        names = rng.sample(FIRST_NAMES, n)
        return ["user_id,name,city"] + [f"u{i + 1},{name},{rng.choice(CITIES)}" for i, name in enumerate(names)]

    def products(n):
        return ["sku,name,price"] + [f"SKU-{rng.randint(1000, 9999)},{rng.choice(ITEMS)},{rng.randint(2, 90)}.{rng.choice(['00', '50', '99'])}"
                                     for _ in range(n)]

    def tickets(n):
        return ["ticket,status,priority"] + [f"T{i + 1},{rng.choice(['open', 'closed', 'pending'])},{rng.choice(['low', 'high'])}"
                                             for i in range(n)]

    def inventory(n):
        return ["item,shelf,count"] + [f"{rng.choice(ITEMS)},{rng.choice('ABCDEF')}{rng.randint(1, 9)},{rng.randint(0, 40)}" for _ in range(n)]

    def visits(n):
        return ["day,page,seconds"] + [f"2023-04-{rng.randint(1, 28):02d},/{rng.choice(['home', 'cart', 'help', 'blog'])},{rng.randint(5, 300)}"
                                       for _ in range(n)]

    def books(n):
        titles = ["Dune", "Emma", "Ulysses", "Beloved", "Middlemarch", "Solaris", "Ivanhoe", "Kindred", "Rebecca", "Walden",
                  "Persuasion", "Frankenstein", "Dracula", "Hamlet", "Candide", "Siddhartha", "Lolita", "Carrie", "Matilda", "Heidi"]
        return ["title;year;pages"] + [f"{t};{rng.randint(1800, 2000)};{rng.randint(90, 900)}" for t in rng.sample(titles, n)]

    def sensors(n):
        return ["sensor\treading\tunit"] + [f"s-{i + 1:02d}\t{rng.randint(-20, 40)}.{rng.randint(0, 9)}\t{rng.choice(['C', 'hPa', '%'])}"
                                            for i in range(n)]

    train = [("orders.csv", orders), ("users.csv", users), ("products.csv", products), ("tickets.csv", tickets),
             ("inventory.csv", inventory)]
    heldout = [("visits.csv", visits), ("books.csv", books), ("sensors.tsv", sensors)]
    phrasings = {
        "train": ["How many data rows does {f} have, not counting the header? Answer with the number only.",
                  "Count the rows of {f}, leaving out its header line. Answer with the number only."],
        "heldout": ["{f} starts with a line of column names. How many records follow it? Reply with just the count.",
                    "Tell me how many entries {f} lists (its first line names the columns and is no entry). Give only the number."],
    }
    tasks = []
    for k, (split, index) in enumerate(splits()):
        name, make = (train + heldout)[k]
        n = counts[k]
        rows = make(n)
        # The usual slip is counting the header as a row; every third task instead misses
        # the last row, as a reader that stops one line early would.
        mistake = n - 1 if k % 3 == 2 else n + 1
        request = phrasings[split][index % 2].format(f=name)
        tasks.append(task(family, split, index, request, {name: lines(rows)}, number(n), answer(n), answer(mistake)))
    return tasks


def csv_sum():
    family = "csv-sum"
    rng = random.Random(family)
    # Each entry: file name, header, the column to sum, and a maker of one row.
    specs = [
        ("sales.csv", ["region", "product", "qty", "unit_price"], "qty",
         lambda: [rng.choice(["north", "south", "east", "west"]), rng.choice(ITEMS), rng.randint(1, 40), rng.randint(2, 30)]),
        ("expenses.csv", ["date", "category", "amount"], "amount",
         lambda: [f"2024-02-{rng.randint(1, 28):02d}", rng.choice(["travel", "food", "office", "software"]), rng.randint(5, 120)]),
        ("scores.csv", ["player", "round", "points"], "points",
         lambda: [rng.choice(FIRST_NAMES), rng.randint(1, 5), rng.randint(0, 50)]),
        ("shipments.csv", ["shipment", "boxes", "weight_kg"], "boxes",
         lambda: [f"SH{rng.randint(100, 999)}", rng.randint(1, 25), rng.randint(3, 80)]),
        ("hours.csv", ["employee", "project", "hours"], "hours",
         lambda: [rng.choice(FIRST_NAMES), rng.choice(["atlas", "beacon", "cedar"]), rng.randint(1, 12)]),
        ("timesheet.csv", ["day", "minutes", "task", "billable"], "minutes",
         lambda: [rng.choice(["mon", "tue", "wed", "thu", "fri"]), rng.randint(10, 95), rng.choice(["review", "calls", "coding"]),
                  rng.choice(["yes", "no"])]),
        ("donations.csv", ["donor", "month", "euros"], "euros",
         lambda: [rng.choice(FIRST_NAMES), rng.choice(["jan", "feb", "mar", "apr"]), rng.randint(5, 150)]),
        ("rainfall.csv", ["station", "mm", "week"], "mm",
         lambda: [rng.choice(CITIES), rng.randint(0, 45), rng.randint(1, 52)]),
    ]
    phrasings = {
        "train": ["What is the total of the {c} column in {f}? Answer with the number only.",
                  "Sum the {c} values in {f}. Answer with the number only."],
        "heldout": ["Add up every value in the '{c}' column of {f} and reply with only the total.",
                    "What do the {c} figures in {f} come to altogether? Give just the number."],
    }
    tasks = []
    seen = set()
    for k, (split, index) in enumerate(splits()):
        name, header, column, make = specs[k]
        col = header.index(column)
        # Redraw until the total differs from every earlier one, so no answer repeats.
        while True:
            rows = [make() for _ in range(rng.randint(4, 10))]
            total = sum(row[col] for row in rows)
            if total not in seen and rows[-1][col] > 0 and total < 1000:
                seen.add(total)
                break
        # The plausible slips: a total that misses the last row, or the total of the
        # neighbouring numeric column.
        others = [i for i, value in enumerate(rows[0]) if i != col and isinstance(value, int)]
        if k % 2 == 0 or not others:
            mistake = total - rows[-1][col]
        else:
            mistake = sum(row[others[0]] for row in rows)
        assert mistake != total
        content = lines([",".join(header)] + [",".join(str(v) for v in row) for row in rows])
        request = phrasings[split][index % 2].format(f=name, c=column)
        tasks.append(task(family, split, index, request, {name: content}, number(total), answer(total), answer(mistake)))
    return tasks


def log_level():
    family = "log-level"
    rng = random.Random(family)
    messages = {
        "ERROR": ["disk quota exceeded", "connection refused by db", "failed to parse payload", "upstream timed out",
                  "could not open socket", "checksum mismatch"],
        "WARN": ["slow query took 2s", "cache nearly full", "retrying request", "deprecated flag used", "high memory use"],
        "INFO": ["request served", "user logged in", "job started", "job finished", "config reloaded", "heartbeat ok"],
        "DEBUG": ["cache hit", "entering handler", "parsed headers", "pool size 4"],
    }
    # Lines at another level whose message mentions the asked level's word in lower case:
    # a case-insensitive search counts them too, which is the mistake these tasks catch.
    decoys = {
        "ERROR": ["error budget at 80 percent", "cleared error cache", "error page template loaded"],
        "WARN": ["warn threshold set to 5", "muted warn notifications", "warn digest sent"],
        "INFO": ["info endpoint queried", "served info page", "info banner updated"],
    }
    train = [("app.log", "ERROR"), ("server.log", "WARN"), ("worker.log", "ERROR"), ("api.log", "INFO"), ("cron.log", "WARN")]
    heldout = [("gateway.log", "WARN"), ("billing.log", "ERROR"), ("scheduler.log", "INFO")]
    phrasings = {
        "train": ["How many lines of {f} are at level {L}? Answer with the number only.",
                  "Count the {L} lines in {f}. Answer with the number only."],
        "heldout": ["In {f}, how many entries have level={l}? Reply with only the count.",
                    "Report how many {l}-level events {f} records. Just the number, please."],
    }
    tasks = []
    targets = rng.sample(range(2, 10), TRAIN + HELDOUT)
    for k, (split, index) in enumerate(splits()):
        name, level = (train + heldout)[k]
        wanted = targets[k]
        n_decoys = rng.randint(1, 2)
        others = [lv for lv in messages if lv != level]
        n_other = rng.randint(3, 9)
        entries = [(level, rng.choice(messages[level])) for _ in range(wanted)]
        entries += [(rng.choice([lv for lv in others if lv != "DEBUG"]), msg) for msg in rng.sample(decoys[level], n_decoys)]
        entries += [(lv, rng.choice(messages[lv])) for lv in (rng.choice(others) for _ in range(n_other))]
        rng.shuffle(entries)
        text = []
        day, clock = rng.randint(1, 28), rng.randint(0, 1800)
        for lv, msg in entries:
            clock += rng.randint(1, 200)
            hour, rest = divmod(clock, 3600)
            minute, second = divmod(rest, 60)
            if split == "train":
                text.append(f"2024-05-{day:02d} {10 + hour:02d}:{minute:02d}:{second:02d} {lv} {msg}")
            else:
                text.append(f'{14 + hour:02d}:{minute:02d}:{second:02d} level={lv.lower()} msg="{msg}"')
        assert sum(level.lower() in line.lower() for line in text) == wanted + n_decoys
        request = phrasings[split][index % 2].format(f=name, L=level, l=level.lower())
        tasks.append(task(family, split, index, request, {name: lines(text)}, number(wanted), answer(wanted),
                          answer(wanted + n_decoys)))
    return tasks


def json_field():
    family = "json-field"
    rng = random.Random(family)
    tasks = []
    phrasings = {
        "train": ['What is the value of the "{k}" field in {f}? Answer with the value only.',
                  'Read {f} and tell me its "{k}" value. Answer with the value only.'],
        "heldout": ['In {f}, what is {p} (the "{k}" key inside the "{parent}" object)? Reply with just the value.',
                    'Look up {p} in {f}: the "{k}" entry of "{parent}". Give only its value.'],
    }

    def flat(name, doc, key, decoy):
        return name, doc, [key], [decoy]

    ports = rng.sample(range(3000, 9000), 4)
    train = [
        flat("config.json", {"name": "billing", "port": ports[0], "timeout": rng.randint(10, 90), "retries": rng.randint(2, 9),
                             "debug": False}, "port", "timeout"),
        flat("package.json", {"name": rng.choice(["fastcsv", "tinyq", "logpipe"]), "version": "2.4.1", "license": "MIT",
                              "author": rng.choice(FIRST_NAMES), "main": "index.js"}, "author", "name"),
        flat("profile.json", {"user": rng.choice(FIRST_NAMES), "age": rng.randint(20, 70), "city": rng.choice(CITIES),
                              "followers": rng.randint(100, 900)}, "followers", "age"),
        flat("settings.json", {"theme": "dark", "language": rng.choice(["pt", "nb", "fr", "de"]), "font_size": rng.randint(10, 20),
                               "region": rng.choice(CITIES)}, "region", "theme"),
        flat("app.json", {"title": "Ledger", "max_users": rng.randint(20, 500), "min_users": rng.randint(1, 19),
                          "owner": rng.choice(FIRST_NAMES)}, "max_users", "min_users"),
    ]
    heldout = [
        ("service.json", {"server": {"host": "10.0.0.4", "port": ports[1]}, "metrics": {"host": "10.0.0.9", "port": ports[2]}},
         ["server", "port"], ["metrics", "port"]),
        ("account.json", {"owner": {"name": rng.choice(FIRST_NAMES), "city": rng.choice(CITIES[:6])},
                          "billing": {"name": rng.choice(FIRST_NAMES), "city": rng.choice(CITIES[6:])}},
         ["billing", "city"], ["owner", "city"]),
        ("deploy.json", {"limits": {"cpu": rng.randint(2, 16), "memory_mb": rng.choice([512, 1024, 2048])},
                         "requests": {"cpu": 1, "memory_mb": 256}, "replicas": rng.randint(3, 7)},
         ["limits", "memory_mb"], ["requests", "memory_mb"]),
    ]
    # Distinct people for the two names of account.json, so that the refused value differs.
    if heldout[1][1]["owner"]["name"] == heldout[1][1]["billing"]["name"]:
        heldout[1][1]["billing"]["name"] = "zoe"
    for k, (split, index) in enumerate(splits()):
        name, doc, path, decoy_path = (train + heldout)[k]

        def lookup(keys):
            value = doc
            for key in keys:
                value = value[key]
            return value

        value, decoy = lookup(path), lookup(decoy_path)
        assert value != decoy
        if split == "train":
            request = phrasings[split][index % 2].format(f=name, k=path[-1])
        else:
            request = phrasings[split][index % 2].format(f=name, p=".".join(path), k=path[-1], parent=path[0])
        if isinstance(value, int):
            check = number(value)
        else:
            # The other strings of the document are refused, so that an answer which
            # repeats the whole file does not pass. Very short ones are left out because
            # they would turn up inside ordinary words of a sentence.
            strings = []

            def walk(node):
                if isinstance(node, dict):
                    for child in node.values():
                        walk(child)
                elif isinstance(node, str) and node != value and len(node) >= 4:
                    strings.append(node)

            walk(doc)
            assert_unrelated([value], strings)
            check = contains([value], strings)
        content = json.dumps(doc, indent=2) + "\n"
        tasks.append(task(family, split, index, request, {name: content}, check, answer(value), answer(decoy)))
    return tasks


FILLER = [
    "the quarterly review is on the calendar", "please water the plants on friday", "lunch order goes out at noon",
    "the wifi password changed last week", "parking permits are due soon", "bring your badge to the lab",
    "the new intern starts on monday", "coffee machine on floor two is fixed", "send slides before the call",
    "the elevator is under maintenance", "archive old tickets by month end", "the team photo is next tuesday",
    "windows on the east side stay shut", "book rooms a day in advance", "the shared drive is almost full",
    "label every box before storage", "the fire drill is at ten", "return library books to the front desk",
]


def text_search():
    family = "text-search"
    rng = random.Random(family)
    phrasings = {
        "count": {
            "train": 'How many lines of {f} contain the word "{w}"? Answer with the number only.',
            "heldout": 'On how many lines does "{w}" appear in {f}? Give only the number of lines.',
        },
        "which": {
            "train": 'Which file in the {d} directory mentions "{w}"? Answer with the file name.',
            "heldout": 'One of the files under {d}/ contains the word "{w}". Name that file and nothing else.',
        },
    }
    # Each entry: kind, the word, and the file or directory.
    plan = [
        ("count", "invoice", "notes.txt"), ("count", "backup", "memo.txt"), ("count", "deadline", "minutes.txt"),
        ("which", "printer", "inbox"), ("which", "meeting", "drafts"),
        ("count", "budget", "journal.md"), ("count", "refund", "support-chat.txt"), ("which", "upgrade", "letters"),
    ]
    counts = iter(rng.sample(range(2, 8), 5))
    used_hits = set()
    tasks = []
    for k, (split, index) in enumerate(splits()):
        kind, word, where = plan[k]
        if kind == "count":
            wanted = next(counts)
            text = rng.sample(FILLER, rng.randint(3, 8))
            # One line names the word twice, so counting occurrences instead of lines is off.
            hits = [f"the {word} for acme and the {word} for zenith"] + rng.sample(
                [f"check the {word} again", f"{word} sent to finance", f"ask about the {word} today", f"no {word} yet from the vendor",
                 f"the {word} is in the blue folder", f"who signed the {word}", f"the {word} can wait until june"], wanted - 1)
            for hit in hits:
                text.insert(rng.randint(0, len(text)), hit)
            assert sum(word in line for line in text) == wanted
            request = phrasings[kind][split].format(f=where, w=word)
            tasks.append(task(family, split, index, request, {where: lines(text)}, number(wanted), answer(wanted),
                              answer(wanted + 1)))
        else:
            # Heldout directories draw their file names from another pool than train ones.
            pool = {"train": ["alpha.txt", "mars.txt", "notes-q1.md", "todo.txt", "receipt.txt", "plan.md", "zebra.txt"],
                    "heldout": ["to-anna.txt", "from-bank.txt", "reply.md", "postcard.txt", "complaint.txt"]}[split]
            names = rng.sample(pool, 4)
            hit = rng.choice([n for n in names if n not in used_hits])
            used_hits.add(hit)
            files = {}
            for fname in names:
                text = rng.sample(FILLER, rng.randint(2, 5))
                if fname == hit:
                    text.insert(rng.randint(0, len(text)), f"the {word} is booked for thursday")
                files[f"{where}/{fname}"] = lines(text)
            others = [n for n in names if n != hit]
            assert [path for path, text in files.items() if word in text] == [f"{where}/{hit}"]
            assert_unrelated([hit], others)
            request = phrasings[kind][split].format(d=where, w=word)
            tasks.append(task(family, split, index, request, files, contains([hit], others), answer(hit), answer(others[0])))
    return tasks


def copy():
    """Copies a file to a new path. The agent's tools can write but never delete, so a
    rename is out of reach; a copy that leaves the original intact is what is asked."""
    family = "copy"
    rng = random.Random(family)
    plan = [
        ("draft.txt", "final.txt"), ("notes.md", "notes-copy.md"), ("report.txt", "report-v2.txt"), ("recipe.txt", "recipe-old.txt"),
        ("agenda.md", "agenda-monday.md"),
        ("settings.ini", "backup/settings.ini"), ("todo.md", "archive/todo-2023.md"), ("hosts.txt", "mirror/hosts.txt"),
    ]
    phrasings = {
        "train": ["Copy {s} to {d}, leaving {s} as it is.", "Make {d} a copy of {s}, with exactly the same content."],
        "heldout": ["Keep a backup of {s} at {d}: same content, and {s} stays unchanged.",
                    "Save an identical duplicate of {s} under the path {d}; do not modify {s}."],
    }
    tasks = []
    for k, (split, index) in enumerate(splits()):
        source, target = plan[k]
        if source.endswith(".ini"):
            rows = ["[main]", f"user = {rng.choice(FIRST_NAMES)}", f"port = {rng.randint(2000, 9000)}", "[paths]", "data = /srv/data"]
        elif source == "hosts.txt":
            rows = [f"10.0.{rng.randint(0, 9)}.{rng.randint(1, 254)} {city}.local" for city in rng.sample(CITIES, rng.randint(3, 6))]
        else:
            rows = rng.sample(FILLER, rng.randint(3, 7))
        content = lines(rows)
        check = {"kind": "all", "checks": [{"kind": "file_equals", "path": target, "content": content},
                                           {"kind": "file_equals", "path": source, "content": content}]}
        # The slips: the copy loses its last line, or it lands at a path that is close to
        # the wanted one (another extension, or a misspelt directory).
        if k % 2 == 0:
            wrong = edits({target: lines(rows[:-1])})
        else:
            directory, _, base = target.rpartition("/")
            if directory:
                misplaced = f"{directory}s/{base}"
            else:
                stem, _, ext = base.rpartition(".")
                misplaced = f"{stem}.{'txt' if ext == 'md' else 'md'}"
            wrong = edits({misplaced: content})
        request = phrasings[split][index % 2].format(s=source, d=target)
        tasks.append(task(family, split, index, request, {source: content}, check, edits({target: content}), wrong))
    return tasks


def markdown():
    family = "markdown"
    rng = random.Random(family)
    tasks = []
    produce = ["apples", "bread", "milk", "rice", "lentils", "coffee", "onions", "pasta", "yoghurt", "oats", "honey", "tea"]
    chores = ["sweep the porch", "fix the gate", "call the plumber", "sort the mail", "oil the hinges", "clean the oven"]
    tools = ["hammer", "wrench", "pliers", "level", "chisel", "drill", "saw", "clamp"]
    colours = ["teal", "amber", "crimson", "ivory", "olive", "navy", "plum", "sand"]
    bullet = {
        "train": "Turn the lines of {s} into a Markdown bullet list, one '- ' item per line in the same order, and write it to {d}.",
        "heldout": "{s} holds a comma-separated list. Write those items to {d} as a Markdown bullet list: each on its own line "
                   "starting with '- ', in the original order.",
    }
    column = "Write a Markdown bullet list of the {c} values in {s} (first column, header excluded) to {d}, one '- value' line each, " \
             "in file order."
    table = {
        "train": "Write {s} as a Markdown table to {d}: the header row, then a separator row, then one row per record, each row "
                 "written like '| a | b |' with one space around every cell.",
        "heldout": "Render the records of {s} as a Markdown table in {d}. Cells go between pipes with single spaces, like "
                   "'| x | y |'; put the column names first, then a separator line, then the records.",
    }
    plan = [
        ("bullet", "groceries.txt", "groceries.md", produce), ("bullet", "chores.txt", "chores.md", chores),
        ("table", "stock.csv", "stock.md", None), ("bullet", "tools.txt", "toolbox.md", tools),
        ("table", "team.csv", "team.md", None),
        ("bullet", "palette.txt", "palette.md", colours), ("column", "crew.csv", "crew.md", None), ("table", "rooms.csv", "rooms.md", None),
    ]
    for k, (split, index) in enumerate(splits()):
        kind, source, target, pool = plan[k]
        if kind == "bullet":
            items = rng.sample(pool, rng.randint(3, min(7, len(pool))))
            if split == "train":
                content = lines(items)
            else:
                content = ", ".join(items) + "\n"
            expected = lines(f"- {item}" for item in items)
            check = {"kind": "file_equals", "path": target, "content": expected}
            # The slip: one item lost at the end.
            wrong = edits({target: lines(f"- {item}" for item in items[:-1])})
            request = bullet[split].format(s=source, d=target)
        elif kind == "column":
            people = rng.sample(FIRST_NAMES, rng.randint(3, 6))
            content = lines(["name,role"] + [f"{p},{rng.choice(['pilot', 'medic', 'cook', 'engineer'])}" for p in people])
            expected = lines(f"- {p}" for p in people)
            check = {"kind": "file_equals", "path": target, "content": expected}
            # The slip: the header made into an item.
            wrong = edits({target: lines(["- name"] + [f"- {p}" for p in people])})
            request = column.format(c="name", s=source, d=target)
        else:
            if source == "stock.csv":
                header = ["item", "qty"]
                records = [[item, str(rng.randint(1, 60))] for item in rng.sample(ITEMS, rng.randint(3, 5))]
            elif source == "team.csv":
                header = ["name", "city", "role"]
                records = [[p, rng.choice(CITIES), rng.choice(["dev", "ops", "qa"])] for p in rng.sample(FIRST_NAMES, rng.randint(3, 5))]
            else:
                header = ["room", "floor", "seats"]
                records = [[f"{r}", str(rng.randint(1, 6)), str(rng.randint(4, 30))]
                           for r in rng.sample(["aurora", "basalt", "cobalt", "delta", "ember"], rng.randint(3, 5))]
            content = lines([",".join(header)] + [",".join(r) for r in records])

            def row(cells):
                return "| " + " | ".join(cells) + " |"

            rows = [row(header)] + [row(r) for r in records]
            # The separator row may be written in several valid ways, so the check asks for
            # the header and the records, not the exact file.
            check = {"kind": "file_contains", "path": target, "all": rows, "none": []}
            solution_text = lines([rows[0], row(["---"] * len(header))] + rows[1:])
            wrong = edits({target: lines([rows[0], row(["---"] * len(header))] + rows[1:-1])})
            request = table[split].format(s=source, d=target)
            tasks.append(task(family, split, index, request, {source: content}, check, edits({target: solution_text}), wrong))
            continue
        tasks.append(task(family, split, index, request, {source: content}, check, edits({target: expected}), wrong))
    return tasks


def config_edit():
    family = "config-edit"
    rng = random.Random(family)
    # Each entry: file name, separator between key and value, the lines, the key to change,
    # a key with a similar name (the likely wrong target) and the new value.
    plan = [
        (".env", "=", ["# database", "DB_HOST=localhost", "PORT=8080", "ADMIN_PORT=9000", "LOG_LEVEL=info", "WORKERS=4"],
         "PORT", "ADMIN_PORT", str(rng.randint(8081, 8999))),
        ("app.env", "=", ["APP_NAME=ledger", "CACHE_TTL=300", "SESSION_TTL=1800", "MODE=production", "REGION=eu"],
         "CACHE_TTL", "SESSION_TTL", str(rng.choice([60, 120, 600, 900]))),
        ("mail.ini", " = ", ["[smtp]", "host = mail.example.org", "port = 25", "timeout = 30", "retry_timeout = 5", "user = robot"],
         "timeout", "retry_timeout", str(rng.randint(40, 90))),
        ("worker.env", "=", ["QUEUE=jobs", "MAX_RETRIES=3", "RETRIES_DELAY=10", "CONCURRENCY=2", "DEBUG=false"],
         "CONCURRENCY", "MAX_RETRIES", str(rng.randint(5, 16))),
        ("db.ini", " = ", ["[pool]", "min_size = 2", "size = 10", "max_size = 20", "idle = 60"],
         "size", "max_size", str(rng.randint(11, 19))),
        ("settings.yaml", ": ", ["name: inventory", "timeout: 30", "read_timeout: 10", "replicas: 2", "log_format: json"],
         "timeout", "read_timeout", str(rng.randint(31, 99))),
        ("pipeline.yml", ": ", ["stage: build", "image: alpine", "cache: true", "max_parallel: 3", "parallel: 1", "notify: ops"],
         "parallel", "max_parallel", str(rng.randint(4, 8))),
        ("site.yaml", ": ", ["title: field notes", "language: en", "theme: plain", "base_theme: classic", "per_page: 10"],
         "theme", "base_theme", rng.choice(["minimal", "paper", "serif"])),
    ]
    phrasings = {
        "train": ["In {f}, set {k} to {v}. Leave every other line unchanged.",
                  "Change the value of {k} in {f} to {v}; do not touch the other settings."],
        "heldout": ["Update {f} so that {k} is {v}, keeping the rest of the file exactly as it is.",
                    "{f}: the {k} setting should now be {v}. Edit the file to say so and change nothing else."],
    }
    tasks = []
    for k, (split, index) in enumerate(splits()):
        name, sep, rows, key, decoy, value = plan[k]
        target_line = next(r for r in rows if r.startswith(key + sep))
        position = rows.index(target_line)
        # The key is never on the first or last line, so that the check can mark both ends
        # of it with newlines and a key that merely ends with the same name cannot match.
        assert 0 < position < len(rows) - 1
        new_line = f"{key}{sep}{value}"
        assert new_line not in rows
        edited = rows[:position] + [new_line] + rows[position + 1:]
        check = {"kind": "file_contains", "path": name, "all": [f"\n{new_line}\n"] + [r for r in rows if r != target_line],
                 "none": [f"\n{target_line}\n"]}
        if k % 2 == 0:
            # The slip: the similarly named key gets the new value.
            decoy_line = next(r for r in rows if r.startswith(decoy + sep))
            wrong_rows = [f"{decoy}{sep}{value}" if r == decoy_line else r for r in rows]
        else:
            # The slip: the new setting is appended and the old line stays.
            wrong_rows = rows + [new_line]
        request = phrasings[split][index % 2].format(f=name, k=key, v=value)
        tasks.append(task(family, split, index, request, {name: lines(rows)}, check, edits({name: lines(edited)}),
                          edits({name: lines(wrong_rows)})))
    return tasks


def shell():
    family = "shell"
    rng = random.Random(family)
    words = ["copper", "meadow", "lantern", "harbor", "violet", "granite", "willow", "falcon", "orchard", "pepper", "summit",
             "thistle", "canyon", "ember", "juniper", "marble", "nectar", "pebble", "quartz", "saffron", "badger", "cobalt", "dune",
             "fjord", "glacier", "hazel", "indigo", "kestrel", "lagoon", "mosaic"]
    phrasings = {
        "lines": {"train": "How many lines does {f} have? Answer with the number only.",
                  "heldout": "Give the line count of {f}. Only the number."},
        "files": {"train": "How many files are in the {d} directory? Answer with the number only.",
                  "heldout": "{d}/ holds some files. How many are there? Reply with the number alone."},
        "word": {"train": "What is the first word of the last line of {f}? Answer with the word only.",
                 "heldout": "Take the final line of {f} and tell me the word it starts with. Only that word."},
    }
    plan = [("lines", "poem.txt"), ("files", "reports"), ("word", "story.txt"), ("lines", "changelog.txt"), ("files", "photos"),
            ("lines", "lyrics.txt"), ("files", "invoices"), ("word", "diary.txt")]
    line_counts = iter(rng.sample(range(4, 20), 3))
    file_counts = iter(rng.sample(range(3, 12), 3))
    extensions = {"reports": "pdf", "photos": "jpg", "invoices": "txt"}
    tasks = []
    for k, (split, index) in enumerate(splits()):
        kind, where = plan[k]
        if kind == "lines":
            n = next(line_counts)
            text = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 6))) for _ in range(n)]
            request = phrasings[kind][split].format(f=where)
            tasks.append(task(family, split, index, request, {where: lines(text)}, number(n), answer(n), answer(n + 1)))
        elif kind == "files":
            n = next(file_counts)
            ext = extensions[where]
            files = {f"{where}/{where[:-1]}-{i + 1:02d}.{ext}": f"{where[:-1]} {i + 1}\n" for i in range(n)}
            request = phrasings[kind][split].format(d=where)
            tasks.append(task(family, split, index, request, files, number(n), answer(n), answer(n - 1)))
        else:
            # Every word of the file is distinct, so that the refused words (the first word
            # of the file and the last word of the last line) cannot be the wanted one.
            # Train and heldout files draw from opposite halves of the word list, so that
            # they share no content and no answer.
            half = words[:15] if split == "train" else words[15:]
            chosen = iter(rng.sample(half, len(half)))
            text = [" ".join(next(chosen) for _ in range(rng.randint(2, 3))) for _ in range(rng.randint(4, 5))]
            last = text[-1].split()
            wanted, refused = last[0], [text[0].split()[0], last[-1]]
            assert_unrelated([wanted], refused)
            request = phrasings[kind][split].format(f=where)
            tasks.append(task(family, split, index, request, {where: lines(text)}, contains([wanted], refused), answer(wanted),
                              answer(refused[1])))
    return tasks


FAMILIES = {
    "csv-count": csv_count,
    "csv-sum": csv_sum,
    "log-level": log_level,
    "json-field": json_field,
    "text-search": text_search,
    "copy": copy,
    "markdown": markdown,
    "config-edit": config_edit,
    "shell": shell,
}


def main():
    for family, make in FAMILIES.items():
        tasks = make()
        assert all(t["family"] == family for t in tasks)
        (HERE / f"{family}.json").write_text(json.dumps(tasks, indent=2, ensure_ascii=False) + "\n")
        print(f"{family}: {len(tasks)} tasks")


if __name__ == "__main__":
    main()
