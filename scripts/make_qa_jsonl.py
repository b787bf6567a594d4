#!/usr/bin/env python3
"""Writes a LongBench-format JSONL file (context, input, answers) of pass-key
questions over held-out text, for `spindlekv eval --tasks jsonl:FILE` on the
byte-level reference model. The same task on a real model would use a
LongBench subset instead.

Usage: make_qa_jsonl.py TEXT OUT.jsonl [--samples N] [--bytes N] [--seed N]
"""
import argparse
import json
import random

p = argparse.ArgumentParser()
p.add_argument("text")
p.add_argument("out")
p.add_argument("--samples", type=int, default=20)
p.add_argument("--bytes", type=int, default=700)
p.add_argument("--seed", type=int, default=11)
a = p.parse_args()
text = open(a.text, encoding="utf-8").read()
rng = random.Random(a.seed)
with open(a.out + ".tmp", "w", encoding="utf-8") as out:
    for i in range(a.samples):
        key = "".join(rng.choice("0123456789") for _ in range(5))
        fact = f"The pass key is {key}. Remember it. {key} is the pass key."
        start = rng.randrange(0, len(text) - a.bytes - 1)
        start = text.find(" ", start) + 1
        filler = text[start:start + a.bytes - len(fact)]
        cut = filler.rfind(" ", 0, int(len(filler) * rng.random())) + 1
        context = filler[:cut] + fact + " " + filler[cut:]
        out.write(json.dumps({"context": context,
                              "input": "\nWhat is the pass key? The pass key is ",
                              "answers": [key]}) + "\n")
import os
os.replace(a.out + ".tmp", a.out)
