"""An English prose corpus from Debian's documentation packages, for the word2vec bench
(issue 15 asks for a registry corpus the project's earlier bench corpora did not use):

    python bench/make_techdocs_corpus.py OUT.txt [--debs DIR] [--work DIR]

Packages (Debian 12 `main`, fetched with `apt-get download`, unpacked with `dpkg-deb -x`):
python3.11-doc (reStructuredText sources), linux-doc-6.1 (reStructuredText and text,
gzipped), postgresql-doc-15 (HTML), perl-doc (POD). On 2026-12-04 this gave 3.68 M
tokens in 104,667 lines.

Only prose paragraphs are kept: not indented (indented blocks are code and examples),
not directives, headings or tables; inline code, roles and URLs removed; at least 8
words and at most 0.15 code symbols per word. One paragraph a line, lowercase
``[a-z]+`` tokens.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import os
import re
import subprocess
from html.parser import HTMLParser

PACKAGES = ("python3.11-doc", "linux-doc-6.1", "postgresql-doc-15", "perl-doc")
CODE_SYMBOLS = "{}();=*/<>_[]#|\\$@%"
INLINE_MARKUP = re.compile(r":\w+:`[^`]*`|``[^`]*``|\.\. [\w-]+::.*|https?://\S+")
RST_SKIP = (".. ", "===", "---", "***", "~~~", "^^^", "+", "|", ">>>")


def prose_tokens(text: str, min_words: int = 8, max_symbols_per_word: float = 0.15) -> list[str]:
    """The paragraph's lowercase words, or [] when it is short or looks like code."""
    text = INLINE_MARKUP.sub(" ", text.lower())
    tokens = re.findall(r"[a-z]+", text)
    symbols = sum(text.count(c) for c in CODE_SYMBOLS)
    return tokens if len(tokens) >= min_words and symbols <= len(tokens) * max_symbols_per_word else []


def rst_paragraphs(lines):
    """Paragraphs of reStructuredText: runs of unindented, non-markup lines."""
    para = []
    for line in lines:
        if not line.strip() or line[0] in " \t" or line.startswith(RST_SKIP):
            if para:
                yield " ".join(para)
                para = []
            continue
        para.append(line.strip())
    if para:
        yield " ".join(para)


class _HtmlParagraphs(HTMLParser):
    """The text of <p> elements, without <pre>/<code>/<script>/<style> inside them."""

    def __init__(self):
        super().__init__()
        self.paragraphs, self._buf, self._skip = [], None, 0

    def handle_starttag(self, tag, attrs):
        if tag in ("pre", "code", "script", "style"):
            self._skip += 1
        elif tag == "p":
            self._buf = []

    def handle_endtag(self, tag):
        if tag in ("pre", "code", "script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag == "p" and self._buf is not None:
            self.paragraphs.append(" ".join(self._buf))
            self._buf = None

    def handle_data(self, data):
        if self._buf is not None and not self._skip:
            self._buf.append(data)


def _read(path: str) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf8", errors="replace") as f:
        return f.read()


def paragraphs(root: str):
    """Every prose paragraph of the unpacked packages under root, package by package."""
    for f in sorted(glob.glob(f"{root}/python3.11-doc/**/_sources/**/*.rst.txt", recursive=True)):
        yield from rst_paragraphs(_read(f).splitlines())
    for pattern in ("*.rst.gz", "*.txt.gz"):
        for f in sorted(glob.glob(f"{root}/linux-doc-6.1/**/{pattern}", recursive=True)):
            yield from rst_paragraphs(_read(f).splitlines())
    for f in sorted(glob.glob(f"{root}/postgresql-doc-15/**/*.html", recursive=True)):
        parser = _HtmlParagraphs()
        parser.feed(_read(f))
        yield from parser.paragraphs
    for f in sorted(glob.glob(f"{root}/perl-doc/**/*.pod*", recursive=True)):
        for para in re.split(r"\n\s*\n", _read(f)):
            if para[:1] not in ("=", " ", "\t"):
                yield re.sub(r"[A-Z]<([^<>]*)>", r"\1", para.replace("\n", " "))  # POD's B<...>, C<...>


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--debs", default="debs", help="where the .deb files are (downloaded when missing)")
    ap.add_argument("--work", default="techdocs", help="where the packages are unpacked")
    args = ap.parse_args()
    os.makedirs(args.debs, exist_ok=True)
    for pkg in PACKAGES:
        debs = glob.glob(os.path.join(args.debs, f"{pkg}_*.deb"))
        if not debs:
            subprocess.run(["apt-get", "download", pkg], cwd=args.debs, check=True)
            debs = glob.glob(os.path.join(args.debs, f"{pkg}_*.deb"))
        os.makedirs(os.path.join(args.work, pkg), exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", debs[0], os.path.join(args.work, pkg)], check=True)
    lines = words = 0
    with open(args.out, "w", encoding="utf8") as out:
        for para in paragraphs(args.work):
            tokens = prose_tokens(para)
            if tokens:
                out.write(" ".join(tokens) + "\n")
                lines, words = lines + 1, words + len(tokens)
    print(f"{args.out}: {lines} lines, {words} tokens")


if __name__ == "__main__":
    main()
