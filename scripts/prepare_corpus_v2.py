#!/usr/bin/env python3
"""Builds the text of the second reference model (data/reference-model-v2)
from freely licensed English text shipped in Debian packages.

    data/corpus-v2/train.txt            training text (not committed; reproducible)
    data/corpus-v2/sources.json         bytes per source and split, with licences
    calibration/v2/calibration.txt      calibration split (committed)
    calibration/v2/heldout.txt          held-out split of the training kinds (committed)
    calibration/v2/heldout_modern.txt   held-out modern prose of a kind never trained on

Splits are disjoint by book or file: Proverbs and Python's HOWTOs calibrate;
Luke (both Bibles) and Python's FAQ are held out; the Jargon File (modern
informal prose, a kind absent from training) is held out whole.

Run scripts/prepare_corpus_v2.sh, which installs the packages first.
"""
import glob
import gzip
import html
import json
import os
import re
import subprocess
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
PYDOC = "/usr/share/doc/python3.11/html/_sources"

# source name -> (Debian package, licence)
SOURCES = {
    "web": ("sword-text-web", "public domain (World English Bible)"),
    "kjv": ("bible-kjv-text", "public domain (King James Version)"),
    "python-docs": ("python3.11-doc", "PSF License Version 2 (Python 3.11 documentation)"),
    "debian-reference": ("debian-reference-en", "GPL-2+ (Debian Reference, Osamu Aoki)"),
    "gnu-standards": ("gnu-standards", "GFDL 1.3+, no invariant sections (GNU Coding Standards)"),
    "jargon": ("jargon-text", "public domain (Jargon File 4.4.7)"),
}


def clean(text):
    """Normalises whitespace inside paragraphs; paragraphs end with a blank line."""
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text)  # info's index markers, form feeds
    paras = [re.sub(r"[ \t]+", " ", p).strip() for p in re.split(r"\n\s*\n", text)]
    return "".join(p + "\n\n" for p in paras if p)


def web_books():
    """World English Bible via SWORD's mod2imp: {book: text}, a chapter per paragraph."""
    imp = subprocess.run(["mod2imp", "engWEB2015eb"], check=True, capture_output=True,
                         text=True).stdout
    books, book, chapter, verses = {}, None, None, []

    def flush():
        if book and verses:
            books.setdefault(book, []).append(" ".join(verses))

    for block in imp.split("$$$")[1:]:
        head, _, body = block.partition("\n")
        m = re.match(r"(.+) (\d+):(\d+)$", head.strip())
        if not m or m.group(3) == "0":
            continue  # module, testament and chapter headings, prefaces
        name, chap = m.group(1), m.group(2)
        if (name, chap) != (book, chapter):
            flush()
            book, chapter, verses = name, chap, []
        body = re.sub(r"<note\b.*?</note>", "", body, flags=re.S)
        body = re.sub(r"<title\b.*?</title>", "", body, flags=re.S)
        body = html.unescape(re.sub(r"<[^>]*>", "", body))
        body = re.sub(r"\s+", " ", body).strip()
        if body:
            verses.append(body)
    flush()
    return {b: "".join(c + "\n\n" for c in chs) for b, chs in books.items()}


def kjv_books():
    """King James Version via bible-kjv's `bible`: {book abbreviation: text}."""
    out = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], check=True, capture_output=True,
                         text=True).stdout
    books, last = {}, None
    for line in out.splitlines():
        ref, _, text = line.partition(" ")
        m = re.match(r"(.+?)(\d+):(\d+)$", ref)
        if not m:
            continue
        book, chap = m.group(1), m.group(2)
        sep = "\n\n" if (book, chap) != last and last is not None else " "
        books[book] = books.get(book, "") + (sep if book in books else "") + text.strip()
        last = (book, chap)
    return {b: t + "\n\n" for b, t in books.items()}


def python_docs(subdir):
    files = sorted(glob.glob(os.path.join(PYDOC, subdir, "**", "*.rst.txt"), recursive=True))
    if subdir == "":
        files = [f for f in files if not re.search(r"/(howto|faq|whatsnew)/", f)]
    return "".join(clean(open(f, encoding="utf-8").read()) for f in files)


def info_text(path):
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    text = re.sub(r"\x1f\n(File: [^\n]*\n)?", "\n\n", text)  # node separators and headers
    text = re.sub(r"^(Tag Table|Local Variables|End Tag Table).*?(?=\n\n|\Z)", "", text,
                  flags=re.S | re.M)
    return clean(text)


def gz_text(path):
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        return clean(f.read())


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def main():
    web, kjv = web_books(), kjv_books()
    for need, have in (("Luke", web), ("Proverbs", web), ("Luke", kjv), ("Prv", kjv)):
        if need not in have:
            sys.exit(f"prepare_corpus_v2: book '{need}' missing from the Bible export")
    held_books = {"Luke", "Proverbs", "Prv"}
    train_parts = {
        "web": "".join(t for b, t in web.items() if b not in held_books),
        "kjv": "".join(t for b, t in kjv.items() if b not in held_books),
        "python-docs": python_docs(""),
        "debian-reference": gz_text(
            "/usr/share/debian-reference/debian-reference.en.txt.gz"),
        "gnu-standards": info_text("/usr/share/info/standards.info.gz") +
        info_text("/usr/share/info/maintain.info.gz"),
    }
    # About 80 KB of each kind: enough to capture, small enough to commit.
    howto = python_docs("howto")
    calibration = {"web": web["Proverbs"], "python-docs": howto[:howto.find("\n\n", 80000) + 2]}
    heldout = {"web": web["Luke"], "kjv": kjv["Luke"], "python-docs": python_docs("faq")}
    modern = {"jargon": gz_text("/usr/share/doc/jargon-text/jargon.txt.gz")}

    # Interleave the training sources in 64 KB pieces so that any window is one
    # source and a sampler sees every kind in proportion.
    pieces = []
    for name, text in train_parts.items():
        paras = text.split("\n\n")
        chunk = ""
        for p in paras:
            chunk += p + "\n\n"
            if len(chunk) > 65536:
                pieces.append(chunk)
                chunk = ""
        if chunk.strip():
            pieces.append(chunk)
    import random
    random.Random(2026).shuffle(pieces)
    write(os.path.join(ROOT, "data/corpus-v2/train.txt"), "".join(pieces))
    write(os.path.join(ROOT, "calibration/v2/calibration.txt"), "".join(calibration.values()))
    write(os.path.join(ROOT, "calibration/v2/heldout.txt"), "".join(heldout.values()))
    # The Jargon File is 1.7 MB; 200 KB of it is plenty to measure.
    jargon = modern["jargon"]
    start = jargon.find("\n\n", len(jargon) // 3) + 2
    write(os.path.join(ROOT, "calibration/v2/heldout_modern.txt"),
          jargon[start:jargon.find("\n\n", start + 200000) + 2])

    def sizes(parts):
        return {k: len(v.encode("utf-8")) for k, v in parts.items()}

    report = {
        "sources": {k: {"package": p, "licence": l} for k, (p, l) in SOURCES.items()},
        "train": sizes(train_parts),
        "calibration": sizes(calibration),
        "heldout": sizes(heldout),
        "heldout_modern": {"jargon": os.path.getsize(
            os.path.join(ROOT, "calibration/v2/heldout_modern.txt"))},
    }
    write(os.path.join(ROOT, "data/corpus-v2/sources.json"), json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
