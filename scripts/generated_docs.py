#!/usr/bin/env python3
"""Checks (or rewrites) every generated part of the docs.

- docs/results/NAME_results.json -> docs/results/NAME_summary.md, the page
  `spindlekv report` writes from the run's records;
- in README.md and docs/*.md, each block between
      <!-- generated: spindlekv ARGS -->
      ...
      <!-- end generated -->
  is the standard output of `spindlekv ARGS`, run from the repository root
  (inside a ``` fence when the block opens with one).

Usage: generated_docs.py check|write SPINDLEKV_BIN [REPO_ROOT]
`check` exits 1 naming each file that differs and its first differing line.
"""
import difflib
import glob
import os
import re
import shlex
import subprocess
import sys

BEGIN = re.compile(r"^<!-- generated: spindlekv (.*) -->$")
END = "<!-- end generated -->"


def run(binary, args, root):
    env = dict(os.environ, COLUMNS="100")
    # argv[0] is "spindlekv" whatever the binary's path, as `--help` prints it.
    out = subprocess.run(["spindlekv"] + args, executable=binary, cwd=root, env=env, check=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return out.stdout


def expected_blocks(path, binary, root):
    """The file as it should be: each generated block replaced by its output."""
    lines = open(path, encoding="utf-8").read().split("\n")
    out, i = [], 0
    while i < len(lines):
        m = BEGIN.match(lines[i])
        out.append(lines[i])
        i += 1
        if not m:
            continue
        j = i
        while j < len(lines) and lines[j] != END:
            j += 1
        if j == len(lines):
            sys.exit(f"{path}: '{lines[i - 1]}' has no '{END}'")
        fenced = i < j and lines[i].startswith("```")
        text = run(binary, shlex.split(m.group(1)), root).rstrip("\n").split("\n")
        out += ([lines[i]] + text + ["```"]) if fenced else text
        out.append(END)
        i = j + 1
    return "\n".join(out)


def main():
    if len(sys.argv) not in (3, 4) or sys.argv[1] not in ("check", "write"):
        sys.exit(__doc__)
    mode, binary = sys.argv[1], os.path.abspath(sys.argv[2])
    root = os.path.abspath(sys.argv[3] if len(sys.argv) == 4 else ".")
    targets = {}
    for results in sorted(glob.glob(os.path.join(root, "docs/results/*_results.json"))):
        page = results[: -len("_results.json")] + "_summary.md"
        targets[page] = run(binary, ["report", results], root)
    for doc in [os.path.join(root, "README.md")] + sorted(glob.glob(os.path.join(root, "docs/*.md"))):
        text = open(doc, encoding="utf-8").read()
        if "<!-- generated: spindlekv " in text:
            targets[doc] = expected_blocks(doc, binary, root)
    stale = 0
    for path, want in targets.items():
        have = open(path, encoding="utf-8").read() if os.path.exists(path) else None
        if have == want:
            continue
        rel = os.path.relpath(path, root)
        if mode == "write":
            tmp = path + ".tmp"
            open(tmp, "w", encoding="utf-8").write(want)
            os.replace(tmp, path)
            print(f"wrote {rel}")
            continue
        stale += 1
        if have is None:
            print(f"{rel}: missing (generated_docs.py write makes it)")
            continue
        diff = list(difflib.unified_diff(have.split("\n"), want.split("\n"), rel, "generated",
                                         lineterm="", n=1))
        print(f"{rel} differs from what is generated:\n" + "\n".join(diff[:12]))
    if stale:
        sys.exit(f"{stale} generated file(s) are stale: run "
                 "`python3 scripts/generated_docs.py write build/spindlekv`")
    print(f"{len(targets)} generated file(s) " + ("up to date" if mode == "write" else "match"))


if __name__ == "__main__":
    main()
