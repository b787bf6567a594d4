#!/usr/bin/env python3
"""Markdown table of a `spindlekv eval` results.json: per method, the measured
ratio with shared tables charged to one request (N = 1) and shared by 16, and
each task's score (accuracies with n and the 95% Wilson interval).
Usage: codec_table.py results.json"""
import json
import sys

records = json.load(open(sys.argv[1]))["records"]
tasks = []
rows = {}
for r in records:
    key = (r["task"], r["metric"])
    if key not in tasks:
        tasks.append(key)
    row = rows.setdefault(r["method"], {"memory": r["memory"], "fixed": r["fixed_ratio"]})
    if r["ci95"]:
        cell = "%.3f [%.3f, %.3f] (n %d)" % (r["value"], r["ci95"][0], r["ci95"][1], r["n"])
    else:
        cell = "%.3f (n %d)" % (r["value"], r["n"])
    if not r["ratio_matched"]:
        cell += "*"
    row[key] = cell
head = ["method", "ratio N = 1", "ratio N = 16", "shared tables (B)"]
head += ["%s %s" % k for k in tasks]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for method, row in rows.items():
    m = row["memory"]
    cells = [method, "%.3f" % m["ratio_n1"], "%.3f" % m["ratio_n16"],
             "%d" % m["shared_bytes_total"]]
    cells += [row.get(k, "-") for k in tasks]
    print("| " + " | ".join(cells) + " |")
