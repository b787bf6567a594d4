#!/usr/bin/env python3
"""Markdown table of a `spindlekv eval` results.json: per method and target
ratio, the measured ratio with shared tables charged to one request (N = 1)
and shared by 16, and each task's score (accuracies with n and the 95% Wilson
interval; KL with its bootstrap interval). With --versus METHOD, each cell
also gives the paired two-sided p against that method at the same target (or
at its own ratio when it is a fixed-ratio codec): exact McNemar on pass-key
outcomes, the exact sign test on per-context KL.
Usage: codec_table.py results.json [--versus METHOD]"""
import json
import math
import sys


def binomial_two_sided(a, b):
    n, k = a + b, min(a, b)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_p(r, ref):
    if r is ref or ref is None:
        return None
    if r.get("outcomes") and ref.get("outcomes") and len(r["outcomes"]) == len(ref["outcomes"]):
        a = sum(1 for x, y in zip(r["outcomes"], ref["outcomes"]) if x and not y)
        b = sum(1 for x, y in zip(r["outcomes"], ref["outcomes"]) if y and not x)
        return binomial_two_sided(a, b)
    x, y = r["detail"].get("per_context"), ref["detail"].get("per_context")
    if x and y and len(x) == len(y):
        return binomial_two_sided(sum(1 for u, v in zip(x, y) if u < v),
                                  sum(1 for u, v in zip(x, y) if u > v))
    return None


args = sys.argv[1:]
versus = None
if "--versus" in args:
    i = args.index("--versus")
    versus = args[i + 1]
    del args[i:i + 2]
records = json.load(open(args[0]))["records"]
tasks, rows = [], {}
for r in records:
    key = (r["task"], r["metric"])
    if key not in tasks:
        tasks.append(key)
    name = r["method"] if r["fixed_ratio"] or r["method"] == "full" else \
        "%s @ %.4g" % (r["method"], r["target_ratio"])
    rows.setdefault(name, {"memory": r["memory"], "records": {}, "target": r["target_ratio"],
                           "fixed": r["fixed_ratio"] or r["method"] == "full"})
    rows[name]["records"][key] = r


def reference(row, key):
    if versus is None:
        return None
    for name, other in rows.items():
        base = name.split(" @ ")[0]
        if base == versus and (other["fixed"] or other["target"] == row["target"]):
            return other["records"].get(key)
    return None


head = ["method", "ratio N = 1", "ratio N = 16", "shared tables (B)"]
head += ["%s %s" % k for k in tasks]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for name, row in rows.items():
    m = row["memory"]
    cells = [name, "%.3f" % m["ratio_n1"], "%.3f" % m["ratio_n16"], "%d" % m["shared_bytes_total"]]
    for key in tasks:
        r = row["records"].get(key)
        if r is None:
            cells.append("-")
            continue
        digits = 4 if r["metric"] == "kl_mean" else 3
        cell = "%.*f" % (digits, r["value"])
        if r["ci95"]:
            cell += " [%.*f, %.*f]" % (digits, r["ci95"][0], digits, r["ci95"][1])
        cell += " (n %d)" % r["n"]
        if not r["ratio_matched"]:
            cell += "*"
        p = paired_p(r, reference(row, key))
        if p is not None:
            cell += " p %.2g" % p
        cells.append(cell)
    print("| " + " | ".join(cells) + " |")
