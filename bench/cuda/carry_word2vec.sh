#!/usr/bin/env bash
# Puts what scripts/gpu_check.sh's word2vec step needs into build/w2v/ (ignored by git), for
# a lent GPU that has neither network nor gensim: carry build/w2v.
#
#   bash bench/cuda/carry_word2vec.sh CORPUS.txt
#
# CORPUS.txt: a UTF-8 text, one sentence per line (the issue's is the techdocs corpus:
# python bench/make_techdocs_corpus.py, see bench/word2vec_corpus.md). It travels gzipped
# (25 MB of techdocs: about 7 MB). The evaluation files are the copies gensim ships
# (WordSim353, questions-words), so gensim must be importable here.
set -euo pipefail
[[ $# == 1 && -f "$1" ]] || { echo "usage: $0 CORPUS.txt" >&2; exit 2; }
corpus=$(realpath "$1") # before the cd below
cd "$(dirname "$0")/../.."
data=$(python -c 'import os, gensim.test.utils as u; print(os.path.dirname(u.datapath("wordsim353.tsv")))')
mkdir -p build/w2v
gzip -c "$corpus" >build/w2v/corpus.txt.gz
cp "$data/wordsim353.tsv" "$data/questions-words.txt" build/w2v/
du -sh build/w2v
echo "carry build/w2v, then (about 6 minutes with the build): PYATTN_GPU_FOCUS=word2vec bash scripts/gpu_check.sh"
