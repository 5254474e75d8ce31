"""data/tokenize_pool.py: the vocabulary pass tokenised by worker processes gives exactly the
one-process pass's provisional ids and vocabulary; accent folding on whole texts equals the
per-character reference, the workers' bytes tokens the reference tokenizer's; failures and
early stops leave no process behind."""
import os
import random
import sys
import unicodedata

import numpy as np
import pytest

from tf_embeddings.data import corpus as corpus_lib
from tf_embeddings.data import tokenize_pool
from tf_embeddings.data import tokenizer as tokenizer_lib
from tf_embeddings.data.errors import UserError
from tf_embeddings.data.vocab import VocabularyBuilder
from tf_embeddings.word2vec import config as config_lib
from tf_embeddings.word2vec import inputs


def reference_fold(text):
  """The definition: lowercase, the letter table, NFKD, every combining mark dropped."""
  text = text.lower().translate(tokenizer_lib._FOLD)  # pylint: disable=protected-access
  return "".join(ch for ch in unicodedata.normalize("NFKD", text)
                 if not unicodedata.combining(ch))


def test_fold_to_ascii_equals_the_per_character_definition():
  rng = random.Random(0)
  pool = ([chr(c) for c in range(32, 127)] * 3 + [chr(c) for c in range(0xa0, 0x250)]
          + [chr(c) for c in range(0x300, 0x370)] + [chr(c) for c in range(0x370, 0x400)]
          + list("\u0130\u212a\u1e9e\ufb01\u2126\u03a3\u1f88\u2028\x85\n\r\t\u00df\u0131"
                 "\u210c\u216b\u2460\uff21\ufffd"))
  for _ in range(5000):
    text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 40)))
    assert tokenizer_lib.fold_to_ascii(text) == reference_fold(text), repr(text)
    # The workers' bytes tokens are the reference's (NFKD's capitals, as in "\u210c" -> "H",
    # stay separators).
    assert tokenizer_lib.text8_bytes(text) == [
        t.encode("ascii") for t in tokenizer_lib.tokenize(text, "text8")], repr(text)
    # Whole texts tokenise as their lines do (what a worker relies on).
    lines = text.split("\n")
    for mode in tokenizer_lib.TOKENIZERS:
      assert tokenizer_lib.tokenize(text, mode) == [
          t for line in lines for t in tokenizer_lib.tokenize(line, mode)]


def write_corpus(path, lines=6000, seed=0):
  """Mixed text: ASCII and accented words, capitals, punctuation, CRLF, blank lines,
  invalid UTF-8 bytes and a long line."""
  rng = random.Random(seed)
  words = ["the", "cat", "Café", "naïve", "Straße", "ŒUVRE", "x\u0301y", "ﬁne", "dog",
           "Ångström", "<unk>", "a-b", "don't", "1776", "Ελλάδα", "zebra"]
  with open(path, "wb") as f:
    for i in range(lines):
      line = " ".join(rng.choice(words) + str(rng.randint(0, 40)) * (rng.random() < 0.3)
                      for _ in range(rng.randint(0, 25)))
      data = line.encode("utf-8")
      if i % 997 == 5:
        data += b" bad\xff\xfebytes"
      f.write(data + (b"\r\n" if i % 7 == 0 else b"\n"))
    f.write(("long " * 200_000).encode("ascii") + b"\n")


def one_process_pass(corpus):
  builder = VocabularyBuilder()
  ids = np.concatenate([builder.add(chunk) for chunk in corpus.iter_token_chunks(50_000)])
  return builder, ids


@pytest.mark.parametrize("tokenizer", tokenizer_lib.TOKENIZERS)
@pytest.mark.parametrize("workers", [0, 2, 3])
def test_workers_give_the_one_process_ids_and_vocabulary(tmp_path, monkeypatch, tokenizer,
                                                         workers):
  monkeypatch.setattr(tokenize_pool, "BATCH_CHARS", 20_000)  # many batches
  a, b = tmp_path / "a.txt", tmp_path / "b.txt"
  write_corpus(a, seed=1)
  write_corpus(b, lines=3000, seed=2)
  spec = f"{a},{b}"
  reference = corpus_lib.resolve_corpus(spec, tokenizer=tokenizer)
  expected_builder, expected_ids = one_process_pass(reference)
  corpus = corpus_lib.resolve_corpus(spec, tokenizer=tokenizer)
  builder = VocabularyBuilder()
  ids = np.concatenate([builder.add_distinct(words, local)
                        for words, local in tokenize_pool.encoded_batches(corpus, workers)])
  np.testing.assert_array_equal(ids, expected_ids)
  assert corpus.replaced_bytes == reference.replaced_bytes > 0
  assert corpus.bad_lines == reference.bad_lines > 0
  for min_count in (1, 5):
    got, lookup = builder.vocabulary(min_count)
    want, want_lookup = expected_builder.vocabulary(min_count)
    assert got.words == want.words
    np.testing.assert_array_equal(got.counts, want.counts)
    np.testing.assert_array_equal(lookup, want_lookup)


def test_prepare_data_same_files_with_and_without_workers(tmp_path):
  path = tmp_path / "c.txt"
  write_corpus(path)
  files = []
  for workers in (0, 2):
    run = tmp_path / f"run{workers}"
    config = config_lib.Config(corpus=str(path), model_dir=str(run), min_count=2)
    vocab, ids = inputs.prepare_data(config, vocab_workers=workers)
    files.append(((run / inputs.VOCAB_FILE).read_bytes(), (run / inputs.IDS_FILE).read_bytes()))
    assert len(vocab) > 10 and ids.shape[0] > 50_000
    assert sorted(os.listdir(run)) == sorted([inputs.VOCAB_FILE, inputs.IDS_FILE,
                                              inputs.IDS_META])
  assert files[0] == files[1]


def children():
  """Process ids of this process's children (Linux)."""
  found = []
  for task in os.listdir("/proc/self/task"):
    try:
      with open(f"/proc/self/task/{task}/children", encoding="ascii") as f:
        found += f.read().split()
    except FileNotFoundError:
      pass  # a thread that ended since the listing (TensorFlow's, of earlier tests)
  return found


def test_empty_corpus_is_one_user_error(tmp_path):
  path = tmp_path / "empty.txt"
  path.write_text("words\n")
  corpus = corpus_lib.resolve_corpus(str(path))  # checks for a first token
  path.write_text("123 456\n...\n\n")  # then none
  with pytest.raises(UserError, match="no tokens|empty"):
    list(tokenize_pool.encoded_batches(corpus, workers=2))
  assert not children()


def test_stopping_early_and_a_dead_worker_leave_no_process(tmp_path, monkeypatch):
  monkeypatch.setattr(tokenize_pool, "BATCH_CHARS", 20_000)
  path = tmp_path / "c.txt"
  write_corpus(path)
  batches = tokenize_pool.encoded_batches(corpus_lib.resolve_corpus(str(path)), workers=2)
  next(batches)
  assert children()
  batches.close()
  assert not children()
  monkeypatch.setattr(tokenize_pool, "worker_command",
                      lambda mode: [sys.executable, "-c",
                                    "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"])
  with pytest.raises(RuntimeError, match="ended early with exit status 3; its stderr ended: "
                                         "boom"):
    list(tokenize_pool.encoded_batches(corpus_lib.resolve_corpus(str(path)), workers=2))
  assert not children()


def test_default_workers_by_corpus_size(tmp_path, monkeypatch):
  path = tmp_path / "c.txt"
  path.write_text("a b c\n")
  corpus = corpus_lib.resolve_corpus(str(path))
  assert tokenize_pool.default_workers(corpus) == 0
  monkeypatch.setattr(tokenize_pool, "MIN_PARALLEL_BYTES", 1)
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
  assert tokenize_pool.default_workers(corpus) == 4
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
  assert tokenize_pool.default_workers(corpus) == 0
