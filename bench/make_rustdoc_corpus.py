"""Builds the corpus of bench/results/word2vec_cpu_rustdoc_2core.md: the English prose of
the Rust documentation that rustup installs, as one paragraph of lowercase letters-only
tokens per line.  Usage: python bench/make_rustdoc_corpus.py OUT.txt [HTML_ROOT]"""
import html, os, re, sys
root = sys.argv[2] if len(sys.argv) > 2 else os.path.expanduser("~/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/share/doc/rust/html")
drop = re.compile(r"<(script|style|pre|code|nav|head)\b.*?</\1>", re.S | re.I)
tag = re.compile(r"<[^>]+>")
para = re.compile(r"</?(p|li|h[1-6]|div|br|dd|dt|td|tr)\b[^>]*>", re.I)
word = re.compile(r"[a-z]+")
n = 0
with open(sys.argv[1], "w") as out:
    for dirpath, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            if not f.endswith(".html") or f == "print.html" or "/src/" in dirpath + "/":
                continue
            t = open(os.path.join(dirpath, f), encoding="utf8", errors="replace").read()
            t = para.sub("\n", drop.sub(" ", t))
            t = html.unescape(tag.sub(" ", t)).lower()
            for line in t.split("\n"):
                toks = word.findall(line)
                if len(toks) >= 3:
                    out.write(" ".join(toks) + "\n")
                    n += len(toks)
print(n, "words")
