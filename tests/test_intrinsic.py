"""Tests for word2vec/intrinsic.py: golden hand-made cases and agreement with gensim."""
import numpy as np
import pytest

from tf_embeddings.data import evalsets
from tf_embeddings.word2vec import intrinsic

# Hand-made 2-D vectors (id 0 = UNK):
#   man (1,0), woman (0,1), king (2,0.2), queen (0.2,2)... queen = king - man + woman
#   roughly, and "apple" points elsewhere. Unit vectors: u(king) ~ (0.995, 0.0995),
#   u(man) = (1,0), u(woman) = (0,1): query = u(king) - u(man) + u(woman)
#   = (-0.005, 1.0995) -> closest remaining word is queen (0.0995, 0.995), cos ~0.99,
#   apple (-1, -0.2) is far. b, c = man... excluded.
WORDS = ["<unk>", "man", "woman", "king", "queen", "apple", "rare"]
VECS = np.array([[5, 5], [1, 0], [0, 1], [2, 0.2], [0.2, 2], [-1, -0.2], [0.3, 3]],
                dtype=np.float32)


def test_analogy_golden():
  analogies = [
      ("royal", [("man", "king", "woman", "queen"),    # correct
                 ("man", "woman", "king", "queen"),    # same answer, correct
                 ("man", "king", "woman", "apple"),    # wrong
                 ("man", "king", "woman", "unseen")]),  # skipped: OOV
      ("empty", [("man", "rare", "woman", "king")]),   # skipped: "rare" outside top 5
  ]
  r = intrinsic.analogy_accuracy(VECS, WORDS, analogies, restrict_vocab=5)
  assert r["sections"]["royal"] == {"accuracy": 2 / 3, "correct": 2, "seen": 3, "questions": 4}
  assert r["sections"]["empty"] == {"accuracy": 0.0, "correct": 0, "seen": 0, "questions": 1}
  assert (r["accuracy"], r["correct"], r["seen"], r["questions"]) == (2 / 3, 2, 3, 5)
  assert list(r["sections"]) == ["royal", "empty"]


def test_analogy_inputs_are_excluded_and_unk_never_answers():
  # UNK (5,5) would be the best answer to man:woman::king:? (query ~(-0.005, 1.1)
  # has cosine ~0.7 with it) but must never be chosen; and if the only remaining
  # candidates are inputs, they are still excluded.
  words = ["<unk>", "man", "woman", "king", "queen"]
  vecs = np.array([[0, 1], [1, 0], [0, 1], [2, 0.2], [-1, 0]], dtype=np.float32)
  r = intrinsic.analogy_accuracy(vecs, words, [("s", [("man", "woman", "king", "queen")])])
  assert r["correct"] == 1  # queen is the only non-input candidate


def test_nearest_neighbours_golden():
  nn = intrinsic.nearest_neighbours(VECS, WORDS, "woman", k=3)
  # cos(woman, rare) = 3/sqrt(9.09) ~ 0.995, cos(woman, queen) ~ 0.995 (0.99504 vs 0.99504..)
  assert [w for w, _ in nn][:2] in (["rare", "queen"], ["queen", "rare"])
  assert nn[2][0] == "king"
  assert nn[2][1] == pytest.approx(0.2 / np.hypot(2, 0.2), abs=1e-6)
  assert all(w not in ("woman", "<unk>") for w, _ in nn)
  assert intrinsic.nearest_neighbours(VECS, WORDS, 1, k=1) == intrinsic.nearest_neighbours(
      VECS, WORDS, "man", k=1)
  assert len(intrinsic.nearest_neighbours(VECS, WORDS, "man", k=100)) == 5
  with pytest.raises(ValueError, match="not in the vocabulary"):
    intrinsic.nearest_neighbours(VECS, WORDS, "pear")


def test_spearman_matches_scipy_with_ties():
  stats = pytest.importorskip("scipy.stats")
  rng = np.random.default_rng(0)
  x = rng.integers(0, 5, size=40).astype(float)
  y = x + rng.integers(0, 3, size=40)
  assert intrinsic.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
  np.testing.assert_allclose(intrinsic._average_ranks([3, 1, 3, 2]), [3.5, 1, 3.5, 2])
  assert np.isnan(intrinsic.spearman([1, 1, 1], [1, 2, 3]))


def test_similarity_golden():
  pairs = [("man", "woman", 1.0), ("king", "queen", 2.0), ("queen", "woman", 9.0),
           ("man", "nope", 5.0)]
  index = {w: i for i, w in enumerate(WORDS)}
  rho, oov = intrinsic.similarity_spearman(VECS, index, pairs)
  # cosines: man-woman 0, king-queen ~0.198, queen-woman ~0.995 -> same order as gold.
  assert rho == pytest.approx(1.0)
  assert oov == 0.25
  rho, oov = intrinsic.similarity_spearman(VECS, index, [("man", "x", 1.0)])
  assert np.isnan(rho) and oov == 1.0


# ---------------------------------------------------------------- against gensim


def _planted_vectors(seed=0, dim=24, noise=1.2):
  """Vectors where analogies hold up to noise, plus distractors and case variants.

  Returns (words in "frequency" order with UNK first, vectors, analogies).
  """
  rng = np.random.default_rng(seed)
  sections = [s for s in evalsets.load_analogies() if s[0] in (
      "capital-common-countries", "family", "gram2-opposite", "gram8-plural")]
  vec = {}
  for k, (_, questions) in enumerate(sections):
    offset = rng.normal(size=dim) * 1.5
    for q in questions:
      for first, second in ((q[0], q[1]), (q[2], q[3])):
        if first not in vec:
          vec[first] = rng.normal(size=dim)
        if second not in vec:
          vec[second] = vec[first] + offset + noise * rng.normal(size=dim)
  words = sorted(vec)
  rng.shuffle(words)
  for i in range(300):
    words.append(f"distractor{i}")
    vec[words[-1]] = rng.normal(size=dim)
  # Case variants: one more frequent than its lowercase form, one less frequent.
  athens = words.index("athens")
  words.insert(athens, "Athens")
  vec["Athens"] = rng.normal(size=dim)
  words.append("GREECE")
  vec["GREECE"] = vec["greece"] + 0.01 * rng.normal(size=dim)
  words = ["<unk>"] + words
  vec["<unk>"] = rng.normal(size=dim)
  vectors = np.stack([vec[w] for w in words]).astype(np.float32)
  return words, vectors, sections


@pytest.mark.parametrize("restrict_vocab", [30000, 150])
def test_analogy_counts_match_gensim(tmp_path, restrict_vocab):
  keyedvectors = pytest.importorskip("gensim.models.keyedvectors")
  words, vectors, analogies = _planted_vectors()
  ours = intrinsic.analogy_accuracy(vectors, words, analogies, restrict_vocab=restrict_vocab)

  path = tmp_path / "questions.txt"
  with open(path, "w") as f:
    for section, questions in analogies:
      f.write(f": {section}\n")
      f.writelines(" ".join(q) + "\n" for q in questions)
  kv = keyedvectors.KeyedVectors(vectors.shape[1])
  kv.add_vectors(words[1:], vectors[1:])  # gensim has no UNK row
  score, sections = kv.evaluate_word_analogies(str(path), restrict_vocab=restrict_vocab,
                                               case_insensitive=True)
  theirs = {s["section"]: (len(s["correct"]), len(s["correct"]) + len(s["incorrect"]))
            for s in sections}
  for section, got in ours["sections"].items():
    assert (got["correct"], got["seen"]) == theirs[section], section
  assert (ours["correct"], ours["seen"]) == theirs["Total accuracy"]
  assert ours["accuracy"] == pytest.approx(score)
  # The planted structure makes the test meaningful: neither all right nor all wrong.
  assert 0.2 < ours["accuracy"] < 0.9
  if restrict_vocab == 150:
    assert ours["seen"] < ours["questions"]


def test_similarity_matches_gensim(tmp_path):
  keyedvectors = pytest.importorskip("gensim.models.keyedvectors")
  words, vectors, _ = _planted_vectors(seed=1)
  rng = np.random.default_rng(2)
  pool = words[1:200] + ["athens", "greece", "unknownword"]
  pairs = [(pool[i], pool[j], float(rng.integers(0, 10)))  # integer scores -> ties
           for i, j in rng.integers(0, len(pool), size=(80, 2)) if i != j]
  pairs.append(("unknownword", "athens", 3.0))
  path = tmp_path / "pairs.tsv"
  with open(path, "w") as f:
    f.write("# comment line\n")
    f.writelines(f"{a}\t{b}\t{s}\n" for a, b, s in pairs)
  kv = keyedvectors.KeyedVectors(vectors.shape[1])
  kv.add_vectors(words[1:], vectors[1:])
  for restrict in (None, 150):
    _, spearman, oov_percent = kv.evaluate_word_pairs(
        str(path), restrict_vocab=restrict or 300000, case_insensitive=True)
    rho, oov = intrinsic.similarity_spearman(
        vectors, {w: i for i, w in enumerate(words)}, pairs, restrict_vocab=restrict)
    assert rho == pytest.approx(spearman[0], abs=1e-6)
    assert oov == pytest.approx(oov_percent / 100)
    assert oov > 0


# ---------------------------------------------------------------- chunked evaluation

def _reference_analogy(vectors, words, analogies, restrict_vocab):
  """One question at a time, every candidate scored in float64: the definition."""
  stop = min(restrict_vocab, len(words) - 1) + 1
  v = np.asarray(vectors[1:stop], np.float64)
  unit = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-300)
  lookup = {}
  for i in range(1, stop):
    lookup.setdefault(words[i].upper(), i - 1)
  groups = [lookup[w.upper()] for w in words[1:stop]]
  correct = seen = 0
  for _, questions in analogies:
    for q in questions:
      r = [lookup.get(w.upper()) for w in q]
      if None in r:
        continue
      seen += 1
      scores = unit @ (unit[r[1]] - unit[r[0]] + unit[r[2]])
      for row, g in enumerate(groups):
        if g in r[:3]:
          scores[row] = -np.inf
      correct += groups[int(np.argmax(scores))] == r[3]
  return correct, seen


class _TfTable:
  """A tf.Variable table read on demand, as word2vec/evaluate.py passes it."""

  def __init__(self, vectors):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tf_embeddings.word2vec import evaluate  # pylint: disable=import-outside-toplevel
    self.rows = evaluate.TableRows(tf.Variable(vectors))
    self.shape = self.rows.shape
    self.reads = []

  def __getitem__(self, key):
    out = self.rows[key]
    self.reads.append(out.shape[0])
    return out


def test_analogy_in_chunks_matches_the_reference_and_reads_only_restricted_rows(monkeypatch):
  words, vectors, analogies = _planted_vectors()
  monkeypatch.setattr(intrinsic, "_BATCH", 7)  # many chunks, a partial last one
  for restrict in (30000, 150):
    table = _TfTable(vectors)
    got = intrinsic.analogy_accuracy(table, words, analogies, restrict_vocab=restrict)
    assert (got["correct"], got["seen"]) == _reference_analogy(vectors, words, analogies,
                                                               restrict)
    assert table.reads == [min(restrict, len(words) - 1)]  # rows 1..restrict, once
    assert got == intrinsic.analogy_accuracy(vectors, words, analogies, restrict)


def test_analogy_on_tensorflow_matches_numpy(monkeypatch):
  # evaluate.tensorflow_best (TF's product, masking and argmax) answers as numpy_best does,
  # case variants masked, over several batches and a partial last one.
  from tf_embeddings.word2vec import evaluate  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(intrinsic, "_BATCH", 50)
  for seed in (0, 1):
    words, vectors, analogies = _planted_vectors(seed=seed, noise=2.5)
    for restrict in (30000, 150):
      want = intrinsic.analogy_accuracy(vectors, words, analogies, restrict)
      got = intrinsic.analogy_accuracy(vectors, words, analogies, restrict,
                                       best=evaluate.tensorflow_best)
      assert got == want
      assert 0 < want["correct"] < want["seen"]


def test_analogy_extreme_values():
  # Huge and tiny rows (squares within float32) and a zero row: unit rows are finite, a zero
  # row scores 0, UNK never answers.
  words = ["<unk>", "man", "woman", "king", "queen", "zero", "tiny"]
  vecs = np.array([[1e15, 1e15], [1e15, 0], [0, 1e-15], [2e15, 2e14], [2e-15, 2e-14],
                   [0, 0], [1e-15, -1e-15]], dtype=np.float32)
  analogies = [("s", [("man", "woman", "king", "queen"), ("man", "zero", "king", "queen"),
                      ("zero", "tiny", "zero", "man")])]
  got = intrinsic.analogy_accuracy(vecs, words, analogies)
  assert (got["correct"], got["seen"]) == _reference_analogy(vecs, words, analogies, 30000)
  assert got["correct"] >= 1


def test_nearest_neighbours_in_chunks_match_brute_force(monkeypatch):
  rng = np.random.default_rng(3)
  vectors = rng.normal(size=(1000, 16)).astype(np.float32)
  vectors[5] = 0.0  # a zero row: cosine 0 with everything
  vectors[7] *= 1e15
  words = ["<unk>"] + [f"w{i}" for i in range(999)]
  monkeypatch.setattr(intrinsic, "_ROW_CHUNK", 64)
  table = _TfTable(vectors)
  queries = ["w3", 7, "w998", "w4"]
  got = intrinsic.nearest_neighbours_many(table, words, queries, k=10)
  assert table.reads == [len(queries)] + [64] * 15 + [1000 - 15 * 64]  # never the table
  v64 = vectors.astype(np.float64)
  unit = v64 / np.maximum(np.linalg.norm(v64, axis=1, keepdims=True), 1e-300)
  for q, nn in zip(queries, got):
    i = words.index(q) if isinstance(q, str) else q
    cos = unit @ unit[i]
    cos[[0, i]] = -np.inf
    want = np.argsort(-cos, kind="stable")[:10]
    assert [w for w, _ in nn] == [words[j] for j in want]
    np.testing.assert_allclose([c for _, c in nn], cos[want], rtol=1e-5, atol=1e-6)
    one = intrinsic.nearest_neighbours(vectors, words, q, k=10)
    assert [w for w, _ in one] == [w for w, _ in nn]
    np.testing.assert_allclose([c for _, c in one], [c for _, c in nn], rtol=1e-6)


def test_similarity_with_a_prebuilt_case_index_and_a_table():
  words, vectors, _ = _planted_vectors(seed=1)
  index = {w: i for i, w in enumerate(words)}
  pairs = [(words[i], words[j], float(i % 7)) for i, j in zip(range(1, 60), range(60, 119))]
  pairs += [("ATHENS", "Greece", 5.0), ("unknownword", "athens", 1.0)]
  upper = intrinsic.case_insensitive_index(index)
  assert upper["ATHENS"] == min(index["athens"], index["Athens"])
  assert upper["GREECE"] == min(index["greece"], index["GREECE"])
  assert "<UNK>" not in upper
  for restrict in (None, 100):
    want = intrinsic.similarity_spearman(vectors, index, pairs, restrict)
    got = intrinsic.similarity_spearman(_TfTable(vectors), index, pairs, restrict,
                                        upper_index=upper)
    assert got == pytest.approx(want) and 0 < got[1] < 1


def test_analogy_sample_scores_a_fixed_subset_of_the_seen_questions(monkeypatch):
  # evaluate.py's evaluations during training score a sample of the questions: the same
  # questions at every call, a subset of the seen ones without repeats, each scored as in
  # the whole test; a sample at least as big as the seen questions is the whole test.
  monkeypatch.setattr(intrinsic, "_BATCH", 7)
  words, vectors, analogies = _planted_vectors(seed=1, noise=2.5)
  every = intrinsic.Analogies(words, analogies, restrict_vocab=150)
  full = every.accuracy(vectors)
  assert full == intrinsic.analogy_accuracy(vectors, words, analogies, 150)
  n = full["seen"] // 3
  got = intrinsic.analogy_accuracy(vectors, words, analogies, 150, sample=n)
  sampled = every.sample(n)
  assert sampled.accuracy(vectors) == got
  assert got["seen"] == n and got["questions"] == full["questions"]
  assert 0 < got["correct"] < n
  assert sum(s["seen"] for s in got["sections"].values()) == n
  rows = {tuple(r) for r in every.rows.tolist()}
  picked = [tuple(r) for r in sampled.rows.tolist()]
  assert len(set(picked)) == n and set(picked) <= rows
  # Each picked question scored by the definition (one question, float64).
  by_row = {}
  for section, questions in analogies:
    for q in questions:
      one = [(section, [q])]
      correct, seen = _reference_analogy(vectors, words, one, 150)
      if seen:
        row = tuple(intrinsic.Analogies(words, one, 150).rows[0].tolist())
        by_row[row] = correct
  assert got["correct"] == sum(by_row[r] for r in picked)
  # Another table of the same vocabulary: the same questions.
  other = np.random.default_rng(9).normal(size=vectors.shape).astype(np.float32)
  assert (intrinsic.Analogies(words, analogies, 150).sample(n).rows == sampled.rows).all()
  assert intrinsic.analogy_accuracy(other, words, analogies, 150, sample=n) == \
      sampled.accuracy(other)
  assert intrinsic.analogy_accuracy(vectors, words, analogies, 150,
                                    sample=full["seen"]) == full
