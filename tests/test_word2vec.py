"""pyattn.word2vec: corpus encoding, pair generation, the trainer on a corpus with
planted structure, KeyedVectors queries, gensim's evaluators and the word2vec file
formats (round trips through gensim), the CLI and bad inputs."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import pyattn
from pyattn.word2vec import KeyedVectors, Word2Vec
from pyattn.word2vec.__main__ import main as cli
from pyattn.word2vec.corpus import encode, shard
from pyattn.reference.negative_sampling import stream_contexts
from pyattn.word2vec.model import (STREAM_LOAD, _merge_at, aligned_rows, cuda_streams, keep_probabilities,
                                   window_examples)

GROUPS = 4
PER_GROUP = 8


def planted_corpus(seed=0, sentences=1500, length=10):
    """Sentences draw words from one group only: g<k>w<i> co-occur with g<k>w<j>, never with other groups."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(sentences):
        g = rng.integers(GROUPS)
        out.append([f"g{g}w{i}" for i in rng.integers(0, PER_GROUP, length)])
    return out


@pytest.fixture(scope="module")
def corpus():
    return planted_corpus()


@pytest.fixture(scope="module", params=[(1, False), (1, True), (0, False)], ids=["sg", "sg-window-batch", "cbow"])
def model(request, corpus):
    sg, window_batch = request.param
    return Word2Vec(corpus, vector_size=32, window=3, min_count=1, sg=sg, negative=5, epochs=5, workers=2, seed=3,
                    sample=0, alpha=0.025 if sg else 0.05, progress=False, window_batch=window_batch)


# ----------------------------------------------------------------------- corpus


def test_encode_vocab_order_counts_and_sentences():
    sents = [["b", "a", "b", "c"], ["c", "b", "x"], [], ["a", "c", "b"]]
    enc = encode(sents, min_count=2)
    assert enc.index_to_key == ["b", "c", "a"]            # by count, ties by first appearance
    assert enc.counts.tolist() == [4, 3, 2]
    assert enc.raw_words == 10
    assert enc.ids.tolist() == [0, 2, 0, 1, 1, 0, 2, 1, 0]   # "x" (count 1) dropped
    assert enc.sentence_ends.tolist() == [4, 6, 6, 9]


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_shard_splits_at_sentence_ends(size, rng):
    sents = [[f"w{i}" for i in rng.integers(0, 20, rng.integers(0, 12))] for _ in range(101)]
    whole = encode(sents, min_count=1)
    parts = [shard(whole, r, size) for r in range(size)]
    assert np.array_equal(np.concatenate([p.ids for p in parts]), whole.ids)
    offsets = np.cumsum([0] + [len(p.ids) for p in parts[:-1]])
    assert np.array_equal(np.concatenate([p.sentence_ends + o for p, o in zip(parts, offsets)]), whole.sentence_ends)
    assert all(p.index_to_key == whole.index_to_key for p in parts)
    assert max(len(p.ids) for p in parts) - min(len(p.ids) for p in parts) <= 2 * 12  # balanced to a sentence or two
    assert abs(sum(p.raw_words for p in parts) - whole.raw_words) <= size


def test_shard_of_a_corpus_too_small():
    with pytest.raises(ValueError, match="too small to share among 2 processes"):
        shard(encode([["a"] * 5], min_count=1), 0, 2)


def test_encode_max_vocab_size_prunes_rare_words():
    sents = [["common"] * 5 + [f"rare{i}"] for i in range(50)]
    enc = encode(sents, min_count=1, max_vocab_size=10, block_tokens=6)
    assert "common" in enc.index_to_key and len(enc.index_to_key) <= 10


@pytest.mark.parametrize("start, stop", [(5, 50), (0, 60), (0, 2), (58, 60), (7, 7)])
def test_window_examples_counts_the_stream_windows(rng, start, stop):
    """The trainer's example count (its loss is averaged over them) is the count of
    pairs, or of centers with a context, in the windows the stream-form update reads."""
    ids = rng.integers(0, 100, 60)
    sentence = np.repeat(np.arange(6), 10)
    window = 3
    radius = window - rng.integers(0, window, 60)
    ctx = stream_contexts(ids, sentence, radius, start, stop, window)
    sent, rad = torch.from_numpy(sentence), torch.from_numpy(radius)
    assert window_examples(sent, rad, start, stop, window, sg=True) == (ctx >= 0).sum()
    assert window_examples(sent, rad, start, stop, window, sg=False) == (ctx >= 0).any(1).sum()


def test_cuda_streams_bounds_the_busiest_rows_load():
    # The planted corpus: 32 equally frequent words; each example updates the positive's
    # output row and 5 negatives' (load 6/32 per word), more than CBOW's 4 context rows.
    uniform = np.full(32, 100)
    for cbow in (False, True):
        assert cuda_streams(uniform, 0, 5, 0.75, 3, cbow) == int(STREAM_LOAD / (6 / 32)) == 512
    # Skewed counts, without subsampling: word 0 has 90 % of the tokens.
    counts = np.array([900, 50, 50])
    p_neg = counts ** 0.75 / (counts ** 0.75).sum()
    assert cuda_streams(counts, 0, 2, 0.75, 5, False) == int(STREAM_LOAD / (0.9 + 2 * p_neg[0]))
    assert cuda_streams(counts, 0, 2, 0.75, 5, True) == int(STREAM_LOAD / (6 * 0.9))  # 6 context rows per example
    # Subsampling thins the frequent word, so more streams fit.
    assert cuda_streams(counts, 0.01, 2, 0.75, 5, True) > cuda_streams(counts, 0, 2, 0.75, 5, True)


def test_epoch_whose_subsampling_keeps_nothing():
    """Every token of a one-word corpus is dropped by subsampling: the epoch's one block is
    empty, and training goes on (the loss stays unmeasured)."""
    model = Word2Vec([["a"] * 5], min_count=1, sample=1e-9, epochs=2, workers=1, progress=False)
    assert np.isnan(model.running_loss) and np.isfinite(model.wv.vectors).all()


def test_keep_probabilities_gensim_formula():
    counts = np.array([1000, 10, 1])
    p = keep_probabilities(counts, 1e-2)
    t = 1e-2 * counts.sum()
    assert p[0] == pytest.approx((np.sqrt(1000 / t) + 1) * t / 1000)
    assert p[1] == 1.0 and p[2] == 1.0
    assert (keep_probabilities(counts, 0) == 1).all()


# ---------------------------------------------------------------------- trainer


def test_planted_structure(model):
    wv = model.wv
    assert len(wv) == GROUPS * PER_GROUP
    same = [wv.similarity(f"g{g}w{i}", f"g{g}w{j}") for g in range(GROUPS) for i in range(4) for j in range(4, 8)]
    cross = [wv.similarity(f"g{g}w{i}", f"g{(g + 1) % GROUPS}w{i}") for g in range(GROUPS) for i in range(8)]
    assert np.mean(same) > np.mean(cross) + 0.3, (np.mean(same), np.mean(cross))
    top = [k for k, _ in wv.most_similar("g1w0", topn=PER_GROUP - 1)]
    assert all(k.startswith("g1") for k in top), top
    assert np.isfinite(model.running_loss) and model.words_per_second > 0


@pytest.mark.parametrize("sg, window_batch", [(1, False), (1, True), (0, False)], ids=["sg", "sg-window-batch", "cbow"])
def test_planted_structure_on_device(device, sg, window_batch, corpus):
    """Training on `device` (on CUDA: the update kernel's ordered streams) finds the planted
    groups and leaves the vectors on the CPU, in wv."""
    model = Word2Vec(corpus, vector_size=32, window=3, min_count=1, sg=sg, negative=5, epochs=5, workers=2, seed=3,
                     sample=0, alpha=0.025 if sg else 0.05, progress=False, device=device, window_batch=window_batch)
    wv = model.wv
    same = [wv.similarity(f"g{g}w{i}", f"g{g}w{j}") for g in range(GROUPS) for i in range(4) for j in range(4, 8)]
    cross = [wv.similarity(f"g{g}w{i}", f"g{(g + 1) % GROUPS}w{i}") for g in range(GROUPS) for i in range(8)]
    assert np.mean(same) > np.mean(cross) + 0.3, (np.mean(same), np.mean(cross))
    assert np.isfinite(model.running_loss) and model.syn1neg.device.type == "cpu"


def test_training_reduces_loss(corpus):
    kw = dict(vector_size=16, window=2, min_count=1, sg=1, epochs=1, workers=1, seed=1, sample=0, progress=False)
    short = Word2Vec(corpus[:300], **kw)
    longer = Word2Vec(corpus[:300], **{**kw, "epochs": 6})
    assert longer.running_loss < short.running_loss


def test_learning_rate_falls_linearly_over_every_epochs_raw_words(corpus):
    """Each block's rate comes from the raw words done before it, over all epochs: from
    alpha at the first block, down in equal steps (equal blocks, sample=0), to one block
    short of min_alpha at the last."""
    seen = []

    class Spy(Word2Vec):
        def _learning_rate(self, progress):
            seen.append((progress, super()._learning_rate(progress)))
            return seen[-1][1]

    blocks = 30  # per epoch: 300 sentences of 10 words, 100-word blocks
    Spy(corpus[:300], vector_size=8, window=2, min_count=1, epochs=3, workers=1, sample=0, batch_words=100,
        alpha=0.03, min_alpha=0.001, progress=False)
    progress, lr = np.array(seen).T
    np.testing.assert_allclose(progress, np.arange(3 * blocks) / (3 * blocks), atol=1e-12)
    np.testing.assert_allclose(lr, 0.03 - 0.029 * progress, atol=1e-12)


def test_same_seed_one_worker_is_reproducible(corpus):
    kw = dict(vector_size=8, window=2, min_count=1, epochs=1, workers=1, seed=5, progress=False)
    a, b = Word2Vec(corpus[:200], **kw), Word2Vec(corpus[:200], **kw)
    np.testing.assert_array_equal(a.wv.vectors, b.wv.vectors)


@pytest.mark.parametrize("dim", [1, 16, 100])
def test_aligned_rows_start_on_64_byte_boundaries(dim):
    t = aligned_rows(37, dim)
    assert t.shape == (37, dim) and t.dtype == torch.float32 and not bool(t.any())
    assert t.stride() == (-(-dim // 16) * 16, 1)
    assert t.data_ptr() % 64 == 0


@pytest.mark.parametrize("sg", [1, 0], ids=["sg", "cbow"])
def test_trainer_tables_have_aligned_rows_and_train_as_packed_ones(corpus, sg):
    """build_vocab gives both tables 64-byte-aligned rows; with one worker, training on them
    gives exactly what packed copies of the same tables give."""
    kw = dict(vector_size=20, window=2, min_count=1, epochs=1, workers=1, seed=5, sg=sg, progress=False)
    a, b = Word2Vec(**kw).build_vocab(corpus[:200]), Word2Vec(**kw).build_vocab(corpus[:200])
    for m in (a, b):
        rows = torch.from_numpy(m.wv.vectors)
        assert rows.stride() == (32, 1) and rows.data_ptr() % 64 == 0
        assert m.syn1neg.stride() == (32, 1) and m.syn1neg.data_ptr() % 64 == 0
    b.wv = KeyedVectors(b.wv.index_to_key, np.ascontiguousarray(b.wv.vectors))
    b.syn1neg = b.syn1neg.contiguous()
    before = b.wv.vectors.copy()
    np.testing.assert_array_equal(a.wv.vectors, before)
    a.train()
    b.train()
    assert not np.array_equal(a.wv.vectors, before), "nothing trained"
    np.testing.assert_array_equal(a.wv.vectors, b.wv.vectors)
    assert torch.equal(a.syn1neg, b.syn1neg)


def test_corpus_file_and_iterable_agree(tmp_path, corpus):
    path = tmp_path / "c.txt"
    path.write_text("\n".join(" ".join(s) for s in corpus[:200]) + "\n")
    kw = dict(vector_size=8, window=2, min_count=1, epochs=1, workers=1, seed=5, progress=False)
    a, b = Word2Vec(corpus_file=str(path), **kw), Word2Vec(corpus[:200], **kw)
    assert a.wv.index_to_key == b.wv.index_to_key
    np.testing.assert_array_equal(a.wv.vectors, b.wv.vectors)
    # a corpus read once by encode, then given to build_vocab: the same model
    c = Word2Vec(**kw).build_vocab(corpus=encode(corpus[:200], min_count=1)).train()
    assert c.wv.index_to_key == a.wv.index_to_key
    np.testing.assert_array_equal(c.wv.vectors, a.wv.vectors)


def test_trainer_bad_inputs(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="corpus is empty"):
        Word2Vec(corpus_file=str(empty), progress=False)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello world\n\xff\xfe broken\n")
    with pytest.raises(ValueError, match="not valid UTF-8 at byte 12"):
        Word2Vec(corpus_file=str(bad), progress=False)
    nul = tmp_path / "nul.bin"
    nul.write_bytes(b"\x1f\x8b\x08\x00\x00binary")
    with pytest.raises(ValueError, match="NUL bytes"):
        Word2Vec(corpus_file=str(nul), progress=False)
    with pytest.raises(OSError, match="cannot read corpus file"):
        Word2Vec(corpus_file=str(tmp_path / "missing.txt"), progress=False)
    with pytest.raises(OSError, match="(?i)is a directory"):
        Word2Vec(corpus_file=str(tmp_path), progress=False)
    with pytest.raises(ValueError, match="min_count=5"):
        Word2Vec([["a", "b"]], progress=False)
    with pytest.raises(TypeError, match="sentence 0 is a str"):
        Word2Vec(["a b c"], min_count=1, progress=False)
    with pytest.raises(ValueError, match="negative must be"):
        Word2Vec(negative=0)
    with pytest.raises(ValueError, match="window must be"):
        Word2Vec(window=0)
    with pytest.raises(ValueError, match="hot_syncs_per_epoch must be None or an int >= 0"):
        Word2Vec(hot_syncs_per_epoch=-1)
    assert Word2Vec(sg=0).hot_syncs_per_epoch == 64 and Word2Vec(sg=1).hot_syncs_per_epoch == 0
    with pytest.raises(ValueError, match="window_batch must be True or False"):
        Word2Vec(window_batch=1)
    with pytest.raises(ValueError, match="device='xla'"):
        Word2Vec(device="xla")
    if not (pyattn.build_info()["cuda"] and torch.cuda.is_available()):
        with pytest.raises(ValueError, match="device='cuda'"):
            Word2Vec(device="cuda")
    with pytest.raises(RuntimeError, match="build_vocab first"):
        Word2Vec().train()
    with pytest.raises(ValueError, match="give one of sentences, corpus_file or corpus"):
        Word2Vec().build_vocab()
    with pytest.raises(ValueError, match="give one of sentences, corpus_file or corpus"):
        Word2Vec().build_vocab([["a"]], corpus=encode([["a"]], min_count=1))
    with pytest.raises(TypeError, match="corpus must be an EncodedCorpus"):
        Word2Vec().build_vocab(corpus=[["a", "b"]])


# ------------------------------------------------------------------ keyedvectors


@pytest.fixture
def kv():
    rng = np.random.default_rng(0)
    keys = ["the", "King", "queen", "man", "woman", "Paris", "france", "king"]
    return KeyedVectors(keys, rng.normal(size=(len(keys), 6)).astype(np.float32))


def test_lookup_and_similarity(kv):
    assert "queen" in kv and "nope" not in kv and len(kv) == 8
    np.testing.assert_array_equal(kv["queen"], kv.vectors[2])
    assert kv[["man", "the"]].shape == (2, 6)
    a, b = kv.vectors[1], kv.vectors[2]
    assert kv.similarity("King", "queen") == pytest.approx(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)), rel=1e-5)
    with pytest.raises(KeyError, match="'nope' not present"):
        kv["nope"]


def test_most_similar_brute_force(kv):
    u = kv.vectors / np.linalg.norm(kv.vectors, axis=1, keepdims=True)
    q = u[2] + u[3] - u[1]
    q /= np.linalg.norm(q)
    order = [i for i in np.argsort(-(u @ q)) if i not in (1, 2, 3)]
    got = kv.most_similar(positive=["queen", "man"], negative=["King"], topn=3)
    assert [k for k, _ in got] == [kv.index_to_key[i] for i in order[:3]]
    assert got[0][1] == pytest.approx(float(u[order[0]] @ q), rel=1e-5)
    assert len(kv.most_similar("the", topn=100)) == 7
    assert all(i < 4 for i in (kv.key_to_index[k] for k, _ in kv.most_similar("the", restrict_vocab=4)))


def test_evaluate_word_pairs_rules(kv, tmp_path):
    from scipy import stats

    f = tmp_path / "pairs.tsv"
    f.write_text("# comment\nking\tqueen\t9.0\nman\twoman\t8.5\nthe\tparis\t1.0\nmissing\tking\t3\nbad line\n"
                 "woman\tfrance\t2.0\n")
    pearson, spearman, oov = kv.evaluate_word_pairs(str(f))
    # case folding: "king" maps to "King" (more frequent spelling, index 1), "paris" to "Paris"
    model = [kv.similarity("King", "queen"), kv.similarity("man", "woman"), kv.similarity("the", "Paris"),
             kv.similarity("woman", "france")]
    gold = [9.0, 8.5, 1.0, 2.0]
    assert spearman[0] == pytest.approx(stats.spearmanr(gold, model)[0])
    assert pearson[0] == pytest.approx(stats.pearsonr(gold, model)[0])
    assert oov == pytest.approx(100 / 5)
    _, _, oov_cs = kv.evaluate_word_pairs(str(f), case_insensitive=False)
    assert oov_cs == pytest.approx(200 / 5)            # "king"->ok (index 7), "paris" missing, "missing"
    _, _, oov_r = kv.evaluate_word_pairs(str(f), restrict_vocab=5)
    assert oov_r == pytest.approx(300 / 5)             # Paris, france and "missing" outside the top 5


def test_evaluate_word_analogies(tmp_path):
    keys = ["a", "b", "c", "d", "e"]
    vecs = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=np.float32)
    kv = KeyedVectors(keys, vecs)
    f = tmp_path / "q.txt"
    f.write_text(": sec1\nA B C D\nA B C E\nA B C Z\n: sec2\nB A D C\n")
    acc, sections = kv.evaluate_word_analogies(str(f))
    names = [s["section"] for s in sections]
    assert names == ["sec1", "sec2", "Total accuracy"]
    # b - a + c = (0, 1, 1) = d exactly; a - b + d = (0, 0, 1) = c
    assert [len(s["correct"]) for s in sections] == [1, 1, 2]
    assert [len(s["incorrect"]) for s in sections] == [1, 0, 1]
    assert acc == pytest.approx(2 / 3)
    assert kv.analogy_oov_ratio == pytest.approx(25.0)
    bad = tmp_path / "nohead.txt"
    bad.write_text("A B C D\n")
    with pytest.raises(ValueError, match="missing section header"):
        kv.evaluate_word_analogies(str(bad))


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_save_load_round_trip(kv, tmp_path, binary):
    path = tmp_path / ("v.bin" if binary else "v.txt")
    kv.save_word2vec_format(str(path), binary=binary)
    back = KeyedVectors.load_word2vec_format(str(path), binary=binary)
    assert back.index_to_key == kv.index_to_key
    np.testing.assert_array_equal(back.vectors, kv.vectors)


def test_load_errors(tmp_path):
    with pytest.raises(OSError, match="cannot read"):
        KeyedVectors.load_word2vec_format(str(tmp_path / "none.txt"))
    f = tmp_path / "bad.txt"
    f.write_text("hello world\n")
    with pytest.raises(ValueError, match="header"):
        KeyedVectors.load_word2vec_format(str(f))
    f.write_text("2 3\na 1 2 3\nb 1 2\n")
    with pytest.raises(ValueError, match="line 3 .* has 2 values, expected 3"):
        KeyedVectors.load_word2vec_format(str(f))
    f.write_text("1 2\na 1 x\n")
    with pytest.raises(ValueError, match="non-numeric"):
        KeyedVectors.load_word2vec_format(str(f))
    f.write_bytes(b"2 3\na " + np.zeros(3, np.float32).tobytes() + b"\nb ")
    with pytest.raises(ValueError, match="ends after 1 of 2"):
        KeyedVectors.load_word2vec_format(str(f), binary=True)
    with pytest.raises(ValueError, match="whitespace"):
        KeyedVectors(["a b"], np.zeros((1, 2))).save_word2vec_format(str(f))


# -------------------------------------------------------------------------- CLI


def test_cli_train_and_evaluate(tmp_path, corpus, capsys):
    c = tmp_path / "corpus.txt"
    c.write_text("\n".join(" ".join(s) for s in corpus[:400]) + "\n")
    out = tmp_path / "vec.bin"
    assert cli(["train", str(c), "-o", str(out), "--size", "16", "--min-count", "1", "--epochs", "2",
                "--workers", "1", "--no-progress"]) == 0
    kv = KeyedVectors.load_word2vec_format(str(out), binary=True)
    assert kv.vector_size == 16 and len(kv) == GROUPS * PER_GROUP
    pairs = tmp_path / "p.tsv"
    pairs.write_text("g0w0\tg0w1\t9\ng0w0\tg1w1\t1\ng2w3\tg2w4\t8\ng3w0\tg1w0\t2\n")
    q = tmp_path / "q.txt"
    q.write_text(": s\ng0w0 g0w1 g1w0 g1w1\n")
    assert cli(["evaluate", str(out), "--pairs", str(pairs), "--analogies", str(q)]) == 0
    text = capsys.readouterr().out
    assert "Spearman" in text and "accuracy" in text
    assert cli(["evaluate", str(tmp_path / "missing.bin"), "--pairs", str(pairs)]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert cli(["train", str(tmp_path / "missing.txt"), "-o", str(out)]) == 2


# ----------------------------------------------------------------------- gensim


def test_gensim_reads_our_files_and_evaluators_agree(kv, tmp_path):
    from gensim.models import keyedvectors as gensim_kv  # a test dependency (requirements-dev.txt)

    for binary in (False, True):
        path = tmp_path / f"v{int(binary)}"
        kv.save_word2vec_format(str(path), binary=binary)
        g = gensim_kv.KeyedVectors.load_word2vec_format(str(path), binary=binary)
        assert list(g.index_to_key) == kv.index_to_key
        np.testing.assert_array_equal(g.vectors, kv.vectors)
        g.save_word2vec_format(str(path), binary=binary)
        back = KeyedVectors.load_word2vec_format(str(path), binary=binary)
        np.testing.assert_array_equal(back.vectors, kv.vectors)
    import os

    data = os.path.join(os.path.dirname(gensim_kv.__file__), "..", "test", "test_data")
    rng = np.random.default_rng(1)
    words = [l.split("\t")[0] for l in open(os.path.join(data, "wordsim353.tsv")) if not l.startswith("#")][:150]
    words += [w for l in open(os.path.join(data, "questions-words.txt")) if not l.startswith(":")
              for w in l.split()][:400]
    keys = list(dict.fromkeys(words))
    ours = KeyedVectors(keys, rng.normal(size=(len(keys), 10)).astype(np.float32))
    theirs = gensim_kv.KeyedVectors(10)
    theirs.add_vectors(keys, ours.vectors)
    for rv in (300000, 200):
        p1, s1, o1 = ours.evaluate_word_pairs(os.path.join(data, "wordsim353.tsv"), restrict_vocab=rv)
        p2, s2, o2 = theirs.evaluate_word_pairs(os.path.join(data, "wordsim353.tsv"), restrict_vocab=rv)
        assert (p1[0], s1[0], o1) == pytest.approx((p2[0], s2[0], o2), rel=1e-5)
        a1, sec1 = ours.evaluate_word_analogies(os.path.join(data, "questions-words.txt"), restrict_vocab=rv)
        a2, sec2 = theirs.evaluate_word_analogies(os.path.join(data, "questions-words.txt"), restrict_vocab=rv)
        assert a1 == pytest.approx(a2)
        assert [len(s["correct"]) for s in sec1] == [len(s["correct"]) for s in sec2]


# ------------------------------------------------------------------ torch.distributed


def test_cli_two_gloo_processes(tmp_path, corpus):
    """torchrun with 2 CPU processes: rank 0 reads the corpus, each rank trains its half,
    the tables are merged 4 times per epoch (and the hot rows 12), rank 0 alone writes
    and reports; the vectors keep the planted groups. An empty corpus fails on every rank with the reader's
    message (no hang)."""
    c = tmp_path / "corpus.txt"
    c.write_text("\n".join(" ".join(s) for s in corpus) + "\n")
    out = tmp_path / "vec.bin"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "pyattn.word2vec", "train"]
    args = ["--size", "32", "--window", "3", "--min-count", "1", "--sample", "0", "--workers", "1",
            "--syncs-per-epoch", "4", "--hot-syncs-per-epoch", "12", "--no-progress"]
    proc = subprocess.run(run + [str(c), "-o", str(out)] + args, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [line for line in proc.stdout.splitlines() if "->" in line]
    assert len(reports) == 1 and "on 2 processes" in reports[0], proc.stdout
    wv = KeyedVectors.load_word2vec_format(str(out), binary=True)
    same = [wv.similarity(f"g{g}w{i}", f"g{g}w{j}") for g in range(GROUPS) for i in range(4) for j in range(4, 8)]
    cross = [wv.similarity(f"g{g}w{i}", f"g{(g + 1) % GROUPS}w{i}") for g in range(GROUPS) for i in range(8)]
    assert np.mean(same) > np.mean(cross) + 0.3, (np.mean(same), np.mean(cross))

    empty = tmp_path / "empty.txt"
    empty.write_text("")
    proc = subprocess.run(run + [str(empty), "-o", str(tmp_path / "e.bin")] + args, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode != 0
    assert proc.stderr.count("error: word2vec: the corpus is empty") == 2, proc.stderr[-3000:]


def test_a_rank_that_dies_stops_the_others(tmp_path, corpus):
    """Rank 1 exits before its first merge, while rank 0 trains on and then waits in the
    merge's all_reduce: torchrun must end the run with an error naming the lost rank, in
    seconds rather than at gloo's 30-minute timeout."""
    c = tmp_path / "corpus.txt"
    c.write_text("\n".join(" ".join(s) for s in corpus) + "\n")
    script = tmp_path / "die.py"
    script.write_text(
        "import os, sys\n"
        "from pyattn import distributed\n"
        "from pyattn.word2vec import Word2Vec\n"
        "world = distributed.init('cpu')\n"
        "m = Word2Vec(vector_size=16, window=3, min_count=1, epochs=50, workers=1, world=world, progress=False)\n"
        "m.build_vocab(corpus_file=sys.argv[1])\n"
        "if world.rank == 1:\n"
        "    os._exit(3)\n"
        "m.train()\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(c)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0
    assert time.perf_counter() - t0 < 120, "the surviving rank was not stopped"
    assert "exitcode  : 3" in proc.stderr and "rank      : 1" in proc.stderr, proc.stderr[-3000:]


@pytest.mark.parametrize("syncs, hot_syncs", [(16, 64), (16, 0), (5, 7), (4, 4)])
def test_merge_schedule_is_the_same_for_any_block_count(syncs, hot_syncs):
    """Ranks' epochs have different block counts; every rank must still make the same
    sequence of merges (a whole merge and a hot one all_reduce different sizes)."""
    sequences = set()
    for n_blocks in (max(syncs, hot_syncs), max(syncs, hot_syncs) + 1, 97, 1000):
        merges = [_merge_at(b, n_blocks, syncs, hot_syncs) for b in range(n_blocks)]
        assert merges[-1] == "whole", "the epoch must end merged"
        sequences.add(tuple(m for m in merges if m is not None))
    assert len(sequences) == 1
    (seq,) = sequences
    assert seq.count("whole") == syncs and len(seq) == max(syncs, hot_syncs)


def test_merge_updates_sums_every_ranks_changes(tmp_path):
    """pyattn.distributed.merge_updates_ on 2 gloo processes: base + the sum of the ranks'
    changes since the base, on every rank, and the base follows."""
    script = tmp_path / "merge.py"
    script.write_text(
        "import torch\n"
        "from pyattn import distributed\n"
        "world = distributed.init('cpu')\n"
        "base = torch.tensor([1.0, -2.0, 0.5])\n"
        "t = torch.zeros(6)[::2]  # not contiguous, as the trainer's padded tables\n"
        "t.copy_(base + torch.tensor([1.0, 2.0, 3.0]) * (world.rank + 1))\n"
        "# and the first rows of a table with padded rows, as the trainer's hot rows, in the same call\n"
        "table = torch.full((3, 4), 7.0)[:, :3]\n"
        "table_base = table.clone()\n"
        "table += torch.arange(9.0).view(3, 3) * (world.rank + 1)\n"
        "distributed.merge_updates_([t, table[:2]], [base, table_base[:2]], world)\n"
        f"open(r'{tmp_path}' + f'/rank{{world.rank}}.txt', 'w').write(str([t.tolist(), base.tolist(), "
        "table.tolist(), table_base.tolist()]))\n"
        "distributed.shutdown(world)\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = [1.0 + 3.0, -2.0 + 6.0, 0.5 + 9.0]  # base + (1 + 2) * delta
    merged_rows = [[7.0 + 3 * (3 * i + j) for j in range(3)] for i in range(2)]
    for r in (0, 1):  # each rank writes its own file (their stdout lines interleave)
        own_last_row = [7.0 + (r + 1) * (6 + j) for j in range(3)]  # not merged: this rank's own
        assert (tmp_path / f"rank{r}.txt").read_text() == str(
            [want, want, merged_rows + [own_last_row], merged_rows + [[7.0] * 3]])
