"""python -m pyattn.models: the trainers end to end on tiny corpora (language models,
the translator, resume, evaluate, translate), their errors on bad input, the message
catalog reader, and a 2-process DistributedDataParallel run with gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from pyattn.models import checkpoint, data
from pyattn.models.__main__ import main as cli

TINY_LM = ["--steps", "6", "--batch-size", "4", "--context", "16", "--no-progress", "--json"]
TINY_TRANSFORMER = ["--d-model", "16", "--heads", "2", "--layers", "1", "--lr", "0.01"]
TINY_LSTM = ["--hidden", "16", "--layers", "1", "--lr", "0.01"]
TINY_MT = ["--steps", "6", "--batch-size", "4", "--emb", "8", "--hidden", "8", "--beam", "2", "--no-progress",
           "--json"]


def _write(path, lines) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf8")
    return str(path)


def _sentences(rng, n, vocab=30, length=(3, 9)) -> list[str]:
    """Lines of words from a small vocabulary with planted order (w_k tends to follow w_{k-1})."""
    lines = []
    for _ in range(n):
        k = int(rng.integers(0, vocab))
        words = []
        for _ in range(int(rng.integers(*length))):
            words.append(f"w{k}")
            k = (k + 1) % vocab if rng.random() < 0.8 else int(rng.integers(0, vocab))
        lines.append(" ".join(words) + " .")
    return lines


@pytest.fixture
def corpus(tmp_path, rng) -> str:
    return _write(tmp_path / "corpus.txt", _sentences(rng, 300))


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_tokenize_and_vocab():
    assert data.tokenize("Can't open %s.") == ["can", "'", "t", "open", "%", "s", "."]
    vocab = data.Vocab.build([["b", "a", "b"], ["c"]])
    assert vocab.itos[:4] == list(data.SPECIALS) and vocab.itos[4] == "b"
    assert vocab.decode(vocab.encode(["a", "zz", "b"]) + [vocab.eos, 5]) == ["a", data.UNK, "b"]


# The n-gram model gets add-0.1 smoothing: with the default 0.01, the 15 held-out
# sentences' perplexity passed 0.6 * vocab for about 1 corpus in 500 (a rare word pair).
@pytest.mark.parametrize("arch, extra", [("ngram", ["--delta", "0.1"]), ("lstm", TINY_LSTM),
                                         ("transformer", TINY_TRANSFORMER)])
def test_train_lm_evaluate_and_resume(arch, extra, corpus, tmp_path, capsys):
    ckpt = str(tmp_path / f"{arch}.pt")
    steps = ["--steps", "100"]  # enough for the tiny models to pick up the planted order
    assert cli(["train-lm", corpus, "--arch", arch, "-o", ckpt] + TINY_LM + extra + steps) == 0
    result = _last_json(capsys)
    # uniform over the vocabulary would give len(vocab); the planted order allows ~3
    vocab = len(checkpoint.load(ckpt, "lm")["vocab"])
    assert 1.0 < result["heldout_perplexity"] < 0.6 * vocab, result
    assert cli(["evaluate", ckpt, corpus]) == 0
    assert "perplexity" in capsys.readouterr().out
    if arch == "ngram":
        return
    assert os.path.getsize(ckpt + ".loss.png") > 0
    assert cli(["train-lm", corpus, "--arch", arch, "-o", ckpt, "--resume"] + TINY_LM + extra + ["--steps", "103"]) == 0
    saved = checkpoint.load(ckpt, "lm")
    assert saved["step"] == 103 and len(saved["losses"]) == 103


def test_train_lm_bad_inputs(corpus, tmp_path, rng, capsys):
    ckpt = str(tmp_path / "m.pt")
    empty = _write(tmp_path / "empty.txt", ["", "   "])
    assert cli(["train-lm", empty, "--arch", "lstm", "-o", ckpt] + TINY_LM) == 2
    assert "empty" in capsys.readouterr().err
    assert cli(["train-lm", str(tmp_path / "missing.txt"), "--arch", "lstm", "-o", ckpt] + TINY_LM) == 2
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "binary.txt").write_bytes(b"abc\x00def\n")
    assert cli(["train-lm", str(tmp_path / "binary.txt"), "--arch", "ngram", "-o", ckpt] + TINY_LM) == 2
    assert "NUL" in capsys.readouterr().err
    # a context longer than the model's positions
    assert cli(["train-lm", corpus, "--arch", "transformer", "-o", ckpt] + TINY_LM + TINY_TRANSFORMER) == 0
    capsys.readouterr()
    with pytest.raises(ValueError, match="max_len|positions|longer"):
        from pyattn.models.evaluate import load_lm

        model, _, _ = load_lm(ckpt)
        model(torch.zeros(1, model.max_len + 1, dtype=torch.int64))
    # resuming on another corpus: the vocabulary differs
    other = _write(tmp_path / "other.txt", [line.replace("w", "v") for line in _sentences(rng, 300)])
    assert cli(["train-lm", other, "--arch", "transformer", "-o", ckpt, "--resume"] + TINY_LM + TINY_TRANSFORMER) == 2
    assert "vocabulary mismatch" in capsys.readouterr().err
    assert cli(["evaluate", ckpt, corpus, corpus]) == 2
    assert "one corpus file" in capsys.readouterr().err


def test_train_mt_translate_evaluate(tmp_path, rng, capsys):
    src_lines = _sentences(rng, 200, length=(2, 6))
    tgt_lines = [" ".join(reversed(s.split())).upper() for s in src_lines]  # a reversal "language"
    src, tgt = _write(tmp_path / "c.en", src_lines), _write(tmp_path / "c.xx", tgt_lines)
    ckpt = str(tmp_path / "mt.pt")
    assert cli(["train-mt", src, tgt, "-o", ckpt] + TINY_MT) == 0
    result = _last_json(capsys)
    assert 0.0 <= result["bleu_greedy"] <= 100.0 and 0.0 <= result["bleu_beam"] <= 100.0
    assert result["heldout_sentences"] == 10
    assert cli(["evaluate", ckpt, src, tgt, "--beam", "2"]) == 0
    assert "BLEU on 200 sentences" in capsys.readouterr().out
    assert cli(["translate", ckpt, src, "--beam", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 200
    short = _write(tmp_path / "short.xx", tgt_lines[:-1])
    assert cli(["train-mt", src, short, "-o", ckpt] + TINY_MT) == 2
    assert "one translation per line" in capsys.readouterr().err


def test_message_catalogs(tmp_path):
    """A .mo file written by hand (GNU format) reads back as msgid -> msgstr pairs."""
    entries = {"": "Content-Type: text/plain; charset=UTF-8\n", "Open file": "Datei öffnen",
               "Save": "Speichern", "ctx\x04Save": "Sichern", "untranslated": ""}
    keys = sorted(entries)
    ids = b"".join(k.encode() + b"\0" for k in keys)
    strs = b"".join(entries[k].encode() + b"\0" for k in keys)
    n, header = len(keys), 28
    id_off, str_off = header + 16 * n, header + 16 * n + len(ids)
    table_ids, table_strs, pos_i, pos_s = b"", b"", id_off, str_off
    for k in keys:
        kb, vb = k.encode(), entries[k].encode()
        table_ids += np.array([len(kb), pos_i], dtype="<u4").tobytes()
        table_strs += np.array([len(vb), pos_s], dtype="<u4").tobytes()
        pos_i, pos_s = pos_i + len(kb) + 1, pos_s + len(vb) + 1
    mo = np.array([0x950412DE, 0, n, header, header + 8 * n, 0, 0], dtype="<u4").tobytes()
    out = tmp_path / "de" / "LC_MESSAGES"
    out.mkdir(parents=True)
    (out / "x.mo").write_bytes(mo + table_ids + table_strs + ids + strs)
    assert sorted(data.read_message_catalogs("de", str(tmp_path))) == [("Open file", "Datei öffnen"),
                                                                        ("Save", "Speichern")]
    with pytest.raises(ValueError, match="no message catalogs"):
        data.read_message_catalogs("fr", str(tmp_path))


def test_ddp_two_gloo_processes(corpus, tmp_path):
    """torchrun with 2 CPU processes: DistributedDataParallel over gloo, data sharded by
    rank, the vocabulary broadcast from rank 0; rank 0 writes the checkpoint."""
    ckpt = str(tmp_path / "ddp.pt")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pyattn.models", "train-lm", corpus, "--arch", "lstm", "-o", ckpt, "--threads", "1"] + TINY_LM + TINY_LSTM
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 1  # only rank 0 reports
    assert np.isfinite(results[0]["heldout_perplexity"])
    saved = checkpoint.load(ckpt, "lm")
    assert saved["step"] == 6 and len(saved["losses"]) == 6
