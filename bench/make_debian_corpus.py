"""Build an ~11 M-word English corpus from Debian packages, for the word2vec benchmark.

    python bench/make_debian_corpus.py OUT.txt [--debs DIR] [--work DIR]

Sources (see bench/word2vec_corpus.md): dict-gcide (Webster 1913, GPL-2+), wordnet-base
glosses (WordNet licence), and four public-domain SWORD modules (Spurgeon's Treasury of
David, Matthew Henry's commentary, World English Bible, King James Bible). The .deb files
are fetched with `apt-get download` (no install, no services) unless --debs holds them;
they are unpacked with `dpkg-deb -x`. Output: plain text, one source line per line,
markup and dictionary boilerplate stripped; tokenisation is left to the trainer.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import os
import re
import struct
import subprocess
import tempfile
import zlib

PACKAGES = ["dict-gcide", "wordnet-base", "sword-comm-tdavid", "sword-comm-mhcc", "sword-text-web", "sword-text-kjv"]
SWORD_MODULES = ["comments/zcom/tdavid", "comments/zcom/mhcc", "texts/ztext/engWEB2015eb", "texts/ztext/engKJV2006eb"]


def fetch(debs: str, work: str) -> str:
    """Unpack every package's .deb (downloaded into `debs` if missing) under work/root."""
    os.makedirs(debs, exist_ok=True)
    root = os.path.join(work, "root")
    os.makedirs(root, exist_ok=True)  # dpkg-deb -x does not create it
    for pkg in PACKAGES:
        found = glob.glob(os.path.join(debs, f"{pkg}_*.deb"))
        if not found:
            subprocess.run(["apt-get", "download", pkg], cwd=debs, check=True)
            found = glob.glob(os.path.join(debs, f"{pkg}_*.deb"))
        subprocess.run(["dpkg-deb", "-x", found[0], root], check=True)
    return root


def gcide_lines(root: str):
    """Dictionary entries without source tags, headword/pronunciation prefixes, citations."""
    with gzip.open(os.path.join(root, "usr/share/dictd/gcide.dict.dz"), "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            s = line.strip()
            if not s or re.fullmatch(r"\[[^\]]*\]", s):          # [1913 Webster] source tags
                continue
            s = re.sub(r"^\S+ \\[^\\]*\\,?", "", s)              # headword \Pro*nun"ci*a`tion\
            s = re.sub(r"--\s*[A-Z][\w.\s&']*$", "", s)          # trailing citations --Bacon.
            yield s.replace("{", "").replace("}", "")


def wordnet_lines(root: str):
    """One line per synset: its lemmas, then the gloss."""
    for path in sorted(glob.glob(os.path.join(root, "usr/share/wordnet/data.*"))):
        with open(path, encoding="latin-1") as f:
            for line in f:
                if line.startswith("  "):                        # licence header
                    continue
                head, _, gloss = line.partition(" | ")
                fields = head.split()
                n = int(fields[3], 16)
                lemmas = [fields[4 + 2 * i].replace("_", " ") for i in range(n)]
                yield ", ".join(lemmas) + " : " + gloss.strip()


def sword_lines(root: str, module: str):
    """Text of a SWORD zText/zCom module: zlib blocks indexed by 12-byte (offset, size, usize)."""
    for index in sorted(glob.glob(os.path.join(root, "usr/share/sword/modules", module, "*.?zs"))):
        with open(index, "rb") as f:
            idx = f.read()
        with open(index[:-1] + "z", "rb") as f:
            data = f.read()
        for i in range(0, len(idx), 12):
            off, size, _ = struct.unpack("<III", idx[i:i + 12])
            if size:
                text = zlib.decompress(data[off:off + size]).decode("utf-8", "replace")
                yield re.sub(r"<[^>]+>", " ", text).replace("\x00", "\n")   # strip OSIS/ThML markup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--debs", default=None, help="folder holding (or to receive) the .deb files")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or tmp
        root = fetch(args.debs or os.path.join(work, "debs"), work)
        words = 0
        with open(args.out, "w", encoding="utf-8") as out:
            sources = [gcide_lines(root), wordnet_lines(root)] + [sword_lines(root, m) for m in SWORD_MODULES]
            for lines in sources:
                for line in lines:
                    out.write(line + "\n")
                    words += len(re.findall(r"[A-Za-z]+", line))
    print(f"wrote {args.out}: ~{words / 1e6:.1f} M words")


if __name__ == "__main__":
    main()
