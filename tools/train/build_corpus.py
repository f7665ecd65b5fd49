#!/usr/bin/python3
"""Builds the asa-tiny training corpus from unpacked source packages.

Called by corpus.sh after it has downloaded and unpacked the pinned packages
into WORK/x-<name>/.  Writes into OUT:
  train.txt.xz, valid.txt.xz   documents separated by a line holding only "\\f"
                               (form feed); paragraphs inside a document are
                               separated by one blank line
  manifest.json                sources, per-document names, sizes and split
and plain copies train.txt / valid.txt into WORK for inspection.

Needs Debian's python3 with python3-rdata (Jane Austen's R data files).
"""
import argparse
import gzip
import hashlib
import html
import json
import lzma
import os
import re
import struct
import sys
import unicodedata
import zlib

DOC_SEP = "\n\f\n"
VALID_FRACTION = 0.02

# ------------------------------------------------------------------ cleaning

_QUOTES = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"',
    "\u00a0": " ", "\u2009": " ", "\u200a": " ", "\u2002": " ", "\u2003": " ",
    "\u2011": "-", "\u00ad": "", "\ufeff": "", "\u200b": "",
}
_QUOTE_RE = re.compile("|".join(re.escape(k) for k in _QUOTES))
_CTRL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def norm_chars(s):
    """Unicode NFC, typographic quotes to ASCII, no control characters."""
    s = unicodedata.normalize("NFC", s)
    s = s.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    s = _QUOTE_RE.sub(lambda m: _QUOTES[m.group(0)], s)
    return _CTRL_RE.sub("", s)


def paragraphs_from_lines(lines):
    """Hard-wrapped lines -> paragraphs (split at blank lines).

    Prose paragraphs are unwrapped into one line.  A paragraph whose lines are
    mostly indented (verse, tables, letters' addresses) keeps its line breaks,
    without the indentation."""
    paras, cur = [], []
    for ln in lines + [""]:
        if ln.strip():
            cur.append(ln.rstrip())
            continue
        if cur:
            indented = sum(1 for x in cur if x[:1] == " ")
            if len(cur) > 1 and indented * 2 > len(cur):
                p = "\n".join(re.sub(r" +", " ", x.strip()) for x in cur)
            else:
                p = re.sub(r" +", " ", " ".join(x.strip() for x in cur))
            paras.append(p)
            cur = []
    return paras


def join_doc(paras):
    return "\n\n".join(p for p in paras if p.strip())


# ------------------------------------------------------------------ sources

def src_sotu(work):
    d = os.path.join(work, "x-sotu", "package", "data")
    docs = []
    for fn in sorted(os.listdir(d)):
        if not fn.endswith(".txt"):
            continue
        with open(os.path.join(d, fn), encoding="utf-8") as f:
            s = norm_chars(html.unescape(f.read()))
        # Each address is stored as one long line; keep its paragraph breaks
        # where the file has any.
        paras = [re.sub(r" +", " ", p.strip()) for p in re.split(r"\n\s*\n|\n", s)]
        docs.append(("sotu/" + fn[:-4], join_doc(paras)))
    return docs


def src_moby(work):
    d = os.path.join(work, "x-moby-dick", "package", "data")
    with open(os.path.join(d, "file_list.json"), encoding="utf-8") as f:
        files = json.load(f)
    docs = []
    for fn in files:
        if fn == "contents.txt":
            continue
        with open(os.path.join(d, fn), encoding="utf-8") as f:
            s = norm_chars(f.read())
        docs.append(("moby-dick/" + fn[:-4], join_doc(paragraphs_from_lines(s.split("\n")))))
    return docs


def _sword_blocks(moddir, testament):
    with open(os.path.join(moddir, testament + ".bzs"), "rb") as f:
        bzs = f.read()
    with open(os.path.join(moddir, testament + ".bzz"), "rb") as f:
        bzz = f.read()
    for i in range(0, len(bzs), 12):
        off, csize, usize = struct.unpack("<III", bzs[i:i + 12])
        raw = zlib.decompress(bzz[off:off + csize])
        if len(raw) != usize:
            raise SystemExit("sword: block %d of %s: size %d != %d" % (i // 12, testament, len(raw), usize))
        yield raw.decode("utf-8")


_OSIS_DROP = re.compile(r"<note\b[^>]*>.*?</note>|<title\b[^>]*>.*?</title>", re.S)
_OSIS_PARA = re.compile(r"<div\b[^>]*type=\"x-p\"[^>]*/>|<lg\b[^>]*/?>|</lg>|<chapter\b[^>]*/>")
_OSIS_CHAPTER = re.compile(r"<chapter\b[^>]*sID=[^>]*/>")
_OSIS_LINE = re.compile(r"<l\b[^>]*sID=[^>]*/>|<l\b[^>]*>")
_OSIS_TAG = re.compile(r"<[^>]*>")
_OSIS_NAME = re.compile(r"<milestone n=\"([^\"]*)\" type=\"x-usfm-toc2\"/>")


def src_bible(work):
    """One document per chapter, headed "<book title> <chapter>"."""
    moddir = os.path.join(work, "x-sword-text-web", "usr", "share", "sword", "modules",
                          "texts", "ztext", "engWEB2015eb")
    docs = []
    nbook = 0
    for testament in ("ot", "nt"):
        for block in _sword_blocks(moddir, testament):
            # footnotes and headings go; a footnote between punctuation and the
            # next word leaves a marker so that a space can be restored
            s = _OSIS_DROP.sub("\x03", block)
            starts = [m.start() for m in _OSIS_CHAPTER.finditer(s)] + [len(s)]
            title, slug = None, None
            for ch in range(len(starts) - 1):
                names = _OSIS_NAME.findall(s, 0, starts[ch])
                if not names:
                    continue
                name = re.sub(r" +", " ", norm_chars(html.unescape(names[-1]))).strip()
                if name != title:
                    title, nchap = name, 0
                    nbook += 1
                    slug = re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-").lower()
                nchap += 1
                chunk = s[starts[ch]:starts[ch + 1]]
                c = _OSIS_PARA.sub("\x01", chunk)
                c = _OSIS_LINE.sub("\x02", c)
                c = _OSIS_TAG.sub("", c)
                c = html.unescape(c).replace("\n", " ")
                c = re.sub(r"([\w,.;:!?])\x03(?=\w)", r"\1 ", c).replace("\x03", "")
                paras = []
                for p in c.split("\x01"):
                    lines = [re.sub(r" +", " ", norm_chars(x)).strip() for x in p.split("\x02")]
                    lines = [x for x in lines if x]
                    if lines:
                        paras.append("\n".join(lines))
                docs.append(("bible-web/%02d-%s-%03d" % (nbook, slug, nchap),
                             join_doc(["%s %d" % (title, nchap)] + paras)))
    return docs


_CHAPTER_RE = re.compile(r"^\s*(CHAPTER|Chapter) [IVXLC0-9]+\.?\s*$")


def src_austen(work):
    import rdata  # python3-rdata
    from rdata.parser._parser import parse_rdata_binary
    d = os.path.join(work, "x-r-cran-janeaustenr", "usr", "lib", "R", "site-library",
                     "janeaustenr", "data")
    with open(os.path.join(d, "Rdata.rdx"), "rb") as f:
        index = rdata.conversion.convert(parse_rdata_binary(memoryview(gzip.decompress(f.read()))))
    with open(os.path.join(d, "Rdata.rdb"), "rb") as f:
        rdb = f.read()
    docs = []
    for name in sorted(index["variables"]):
        off, ln = (int(x) for x in index["variables"][name])
        blob = rdb[off:off + ln]
        usize = struct.unpack(">I", blob[:4])[0]
        raw = zlib.decompress(blob[4:])
        if len(raw) != usize:
            raise SystemExit("austen: %s: size mismatch" % name)
        lines = rdata.conversion.convert(parse_rdata_binary(memoryview(raw)))
        lines = [norm_chars(x or "") for x in lines]
        # split into chapters; front matter joins the first chapter
        chapters, cur = [], []
        for ln_ in lines:
            if _CHAPTER_RE.match(ln_) and any(x.strip() for x in cur) and \
                    (chapters or any(_CHAPTER_RE.match(x) for x in cur)):
                chapters.append(cur)
                cur = []
            cur.append(ln_)
        chapters.append(cur)
        for i, ch in enumerate(chapters):
            paras = paragraphs_from_lines(ch)
            # Gutenberg-style _italics_ markers
            paras = [re.sub(r"_([^_\n]+)_", r"\1", p) for p in paras]
            docs.append(("austen/%s-%03d" % (name, i + 1), join_doc(paras)))
    return docs


SOURCES = [
    ("sotu", src_sotu),
    ("moby-dick", src_moby),
    ("bible-web", src_bible),
    ("austen", src_austen),
]


def split_docs(docs):
    """Per source, documents in order of sha256(name); the first ones up to
    VALID_FRACTION of the source's characters go to validation."""
    by_src = {}
    for name, text in docs:
        by_src.setdefault(name.split("/")[0], []).append((name, text))
    valid = set()
    for src, items in by_src.items():
        total = sum(len(t) for _, t in items)
        acc = 0
        for name, text in sorted(items, key=lambda x: hashlib.sha256(x[0].encode()).hexdigest()):
            if acc >= VALID_FRACTION * total:
                break
            valid.add(name)
            acc += len(text)
    return valid


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--sources-json", required=True, help="package/version/sha256/licence table")
    a = ap.parse_args()

    docs = []
    for src, fn in SOURCES:
        got = fn(a.work)
        got = [(n, t.strip()) for n, t in got if len(t.strip()) >= 100]
        print("%-10s %5d documents %10d characters" % (src, len(got), sum(len(t) for _, t in got)))
        docs.extend(got)
    for n, t in docs:
        if "\f" in t:
            raise SystemExit("document %s contains a form feed" % n)
    valid = split_docs(docs)
    train_docs = [(n, t) for n, t in docs if n not in valid]
    valid_docs = [(n, t) for n, t in docs if n in valid]

    os.makedirs(a.out, exist_ok=True)
    with open(a.sources_json, encoding="utf-8") as f:
        sources = json.load(f)
    manifest = {"format": "documents separated by a line holding only a form feed (\\f); "
                          "paragraphs separated by a blank line",
                "sources": sources, "splits": {}}
    for split, items in (("train", train_docs), ("valid", valid_docs)):
        text = DOC_SEP.join(t for _, t in items) + "\n"
        with open(os.path.join(a.work, split + ".txt"), "w", encoding="utf-8") as f:
            f.write(text)
        data = text.encode("utf-8")
        with lzma.open(os.path.join(a.out, split + ".txt.xz"), "wb", preset=9) as f:
            f.write(data)
        manifest["splits"][split] = {
            "documents": len(items), "characters": len(text), "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "per_source": {s: {"documents": sum(1 for n, _ in items if n.startswith(s + "/")),
                               "characters": sum(len(t) for n, t in items if n.startswith(s + "/"))}
                           for s, _ in SOURCES},
            "document_names": [n for n, _ in items],
        }
        print("%-5s %5d documents %10d characters" % (split, len(items), len(text)))
    with open(os.path.join(a.out, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
