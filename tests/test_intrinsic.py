"""Tests for word2vec/intrinsic.py: golden hand-made cases and agreement with gensim."""
import numpy as np
import pytest

from data import evalsets
from word2vec import intrinsic

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
