"""Golden tests for data/vocab.py: order, UNK count, min_count, max_size, tsv round trip."""
import collections

import numpy as np
import pytest

from tf_embeddings.data.errors import UserError
from tf_embeddings.data.vocab import UNK, Vocabulary, VocabularyBuilder

# Hand-made corpus, split into chunks to check that first appearance is tracked
# across chunk boundaries.
#   counts: the 4, cat 3, sat 3, dog 3, a 2, mat 2, on 1, zebra 1   (19 tokens)
#   first appearance: the(0) cat(1) sat(2) on(3) a(4) mat(5) dog(6) zebra(...)
# Sorted by count desc, ties by first appearance (NOT alphabetical, which would put
# "cat" < "dog" < "sat" and "a" < "mat"):
#   the 4 | cat 3, sat 3, dog 3 | a 2, mat 2 | on 1, zebra 1
CHUNKS = [
    "the cat sat on a mat".split(),
    "the dog sat the dog".split(),
    "cat a mat dog zebra the cat sat".split(),
]


def test_order_ties_by_first_appearance_and_unk_count():
  v = Vocabulary.build(CHUNKS, min_count=2)
  assert v.words == [UNK, "the", "cat", "sat", "dog", "a", "mat"]
  # UNK = dropped words "on" (1) + "zebra" (1).
  assert v.counts.tolist() == [2, 4, 3, 3, 3, 2, 2]
  assert v.counts.dtype == np.int64
  assert v.total_count == 19 == sum(len(c) for c in CHUNKS)
  assert len(v) == 7
  assert v.index == {w: i for i, w in enumerate(v.words)}


def test_min_count_one_keeps_everything():
  v = Vocabulary.build(CHUNKS, min_count=1)
  assert v.words == [UNK, "the", "cat", "sat", "dog", "a", "mat", "on", "zebra"]
  assert v.counts[0] == 0


def test_max_size_counts_unk():
  # max_size=4 -> UNK + the 3 most frequent words; "dog" (3) is cut by size,
  # so UNK = dog 3 + a 2 + mat 2 + on 1 + zebra 1 = 9.
  v = Vocabulary.build(CHUNKS, min_count=1, max_size=4)
  assert v.words == [UNK, "the", "cat", "sat"]
  assert v.counts.tolist() == [9, 4, 3, 3]
  assert v.total_count == 19
  with pytest.raises(ValueError):
    Vocabulary.build(CHUNKS, max_size=1)
  with pytest.raises(ValueError):
    Vocabulary.build(CHUNKS, min_count=0)


def test_literal_unk_token_is_merged_into_unk():
  v = Vocabulary.build([["<unk>", "x", "x", "<unk>", "y"]], min_count=2)
  assert v.words == [UNK, "x"]
  assert v.counts.tolist() == [3, 2]


def test_nothing_reaches_min_count_is_user_error():
  with pytest.raises(UserError, match="lower --min_count"):
    Vocabulary.build([["a", "b"]], min_count=5)


def test_encode_unknown_is_zero():
  v = Vocabulary.build(CHUNKS, min_count=2)
  ids = v.encode(["the", "zebra", "mat", "never-seen", "<unk>", "cat"])
  assert ids.dtype == np.int32
  assert ids.tolist() == [1, 0, 6, 0, 0, 2]
  assert v.encode([]).shape == (0,)


def test_save_load_round_trip(tmp_path):
  v = Vocabulary.build(CHUNKS, min_count=2)
  path = tmp_path / "run" / "vocab.tsv"
  v.save(path)
  assert path.read_text().splitlines()[:3] == ["<unk>\t2", "the\t4", "cat\t3"]
  w = Vocabulary.load(path)
  assert w.words == v.words
  np.testing.assert_array_equal(w.counts, v.counts)
  assert w.index == v.index
  assert [p.name for p in path.parent.iterdir()] == ["vocab.tsv"]  # no temp file left


def test_save_refuses_tab_or_newline_words(tmp_path):
  v = Vocabulary([UNK, "a\tb"], [0, 1])
  with pytest.raises(ValueError, match="tab"):
    v.save(tmp_path / "v.tsv")
  assert not (tmp_path / "v.tsv").exists()
  with pytest.raises(ValueError, match="tab/newline"):
    Vocabulary.build([["ok", "ok", "x\ny", "x\ny"]], min_count=1)


@pytest.mark.parametrize("content,reason", [
    ("", "is empty"),
    ("the\t4\n", "first word must be <unk>"),
    ("<unk>\t0\nthe 4\n", "line 2 is malformed \\(1 tab"),
    ("<unk>\t0\nthe\tfour\n", "line 2 .*'four' is not an integer"),
    ("<unk>\t0\nthe\t4\nthe\t3\n", "line 3 .*duplicate"),
    ("<unk>\t0\n\t3\n", "empty word"),
    ("<unk>\t0\nthe\t-1\n", "negative"),
    ("<unk>\t0\na\tb\t3\n", "3 tab-separated"),
])
def test_load_malformed(tmp_path, content, reason):
  path = tmp_path / "vocab.tsv"
  path.write_text(content)
  with pytest.raises(UserError, match=reason):
    Vocabulary.load(path)


def test_load_missing_and_non_utf8(tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    Vocabulary.load(tmp_path / "nope.tsv")
  path = tmp_path / "v.tsv"
  path.write_bytes(b"<unk>\t0\ncaf\xe9\t3\n")
  with pytest.raises(UserError, match="not UTF-8"):
    Vocabulary.load(path)


def test_build_from_corpus_chunks(tmp_path):
  from tf_embeddings.data.corpus import resolve_corpus  # pylint: disable=import-outside-toplevel
  path = tmp_path / "c.txt"
  path.write_text("The cat sat. The dog sat!\nA cat, a dog, a zebra.\n")
  corpus = resolve_corpus(str(path))
  v = Vocabulary.build(corpus.iter_token_chunks(chunk_tokens=3), min_count=2)
  # the 2, cat 2, sat 2, dog 2, a 3 -> a first, then ties by first appearance.
  assert v.words == [UNK, "a", "the", "cat", "sat", "dog"]
  assert v.counts.tolist() == [1, 3, 2, 2, 2, 2]


def _counter_reference(tokens, min_count, max_size):
  """The definition: collections.Counter, stable sort by count (ties: first appearance)."""
  counter = collections.Counter(tokens)
  unk = counter.pop("<unk>", 0)
  ranked = sorted(counter.items(), key=lambda item: -item[1])
  kept = [(w, c) for w, c in ranked if c >= min_count][:(max_size - 1) if max_size else None]
  total = sum(counter.values()) + unk
  return ["<unk>"] + [w for w, _ in kept], [total - sum(c for _, c in kept)] + [c for _, c in kept]


@pytest.mark.parametrize("min_count, max_size", [(1, None), (3, None), (2, 7)])
def test_builder_one_pass_counts_and_encodes_like_the_definition(min_count, max_size):
  rng = np.random.default_rng(min_count)
  pool = [f"w{i}" for i in range(40)] + ["<unk>"]
  # Zipf-ish draws, so that there are ties at every count and words below min_count.
  tokens = [pool[i] for i in np.minimum(rng.zipf(1.3, size=5000) - 1, len(pool) - 1)]
  builder = VocabularyBuilder()
  provisional = np.concatenate([builder.add(tokens[s:s + 777]) for s in range(0, 5000, 777)])
  vocab, lookup = builder.vocabulary(min_count, max_size)
  words, counts = _counter_reference(tokens, min_count, max_size)
  assert vocab.words == words and vocab.counts.tolist() == counts
  assert vocab.words == Vocabulary.build([tokens[:2500], tokens[2500:]], min_count,
                                         max_size).words
  np.testing.assert_array_equal(lookup[provisional], vocab.encode(tokens))
  assert lookup.dtype == np.int32 and provisional.dtype == np.int32


def test_zipf_corpus_for_the_benchmarks(tmp_path):
  from tf_embeddings.data import corpus as corpus_lib  # pylint: disable=import-outside-toplevel
  from tf_embeddings.data import synthetic  # pylint: disable=import-outside-toplevel
  path = str(tmp_path / "zipf.txt")
  synthetic.write_zipf_corpus(path, 30_000, distinct=700, exponent=1.0, words_per_line=7)
  corpus = corpus_lib.resolve_corpus(path, tokenizer="text8")  # a-z words survive text8
  vocab = Vocabulary.build(corpus.iter_token_chunks(), min_count=1)
  assert vocab.total_count == 30_000 and 300 < len(vocab) - 1 <= 700
  assert vocab.words[1] == "wa" and vocab.words[2] == "wb"  # ranks 1, 2 (ids 0, 1)
  # P(rank 1) / P(rank 2) = 2 for exponent 1.
  assert 1.7 < vocab.counts[1] / vocab.counts[2] < 2.3
  with open(path, encoding="ascii") as f:
    assert len(f.readline().split()) == 7
