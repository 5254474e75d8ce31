"""Intrinsic evaluation of word vectors: analogies, word similarity, neighbours.

Numpy only. The figures are computed the way gensim 4.4 computes them, so they
can be compared directly with gensim's:

* `analogy_accuracy` == ``KeyedVectors.evaluate_word_analogies(questions,
  restrict_vocab=N, case_insensitive=True)``: 3CosAdd on unit vectors, answers
  searched among the N most frequent words, questions with a word outside
  them skipped (word2vec's compute-accuracy does the same), a, b and c
  excluded from the answers.
* `similarity_spearman` == the Spearman rho of ``evaluate_word_pairs``.

Id 0 is UNK (see data/vocab.py): it is never a candidate answer or neighbour,
and "the N most frequent words" are ids 1..N. Words are matched case-insensitively
(by ``str.upper()``, like gensim and word2vec's compute-accuracy); when the
vocabulary has several case variants of a word, the most frequent (lowest id)
one stands for it, and none of the variants of a, b, c can be an answer.
"""
import copy

import numpy as np

# Questions scored per matrix product: [1024, 30000] float32 scores = 123 MB.
_BATCH = 1024
# Table rows normalised at a time by nearest_neighbours: [65536, 300] float32 = 79 MB.
_ROW_CHUNK = 65536
# The seed of analogy_accuracy's question sample.
_SAMPLE_SEED = 20261202


def _unit_rows(vectors):
  """Rows scaled to unit L2 norm, as float32; all-zero rows stay zero."""
  v = np.asarray(vectors, dtype=np.float32)
  norms = np.linalg.norm(v, axis=1, keepdims=True)
  return v / np.maximum(norms, np.finfo(np.float32).tiny)


def _check_table(vectors, vocab_words):
  """`vectors` may be any table with .shape and numpy-style slicing (an array, a memmap, a
  tf.Variable): only the rows needed are read, so no copy of a whole big table is made."""
  shape = tuple(vectors.shape)
  if len(shape) != 2 or shape[0] != len(vocab_words):
    raise ValueError(f"vectors {shape} do not match {len(vocab_words)} words")


def _case_insensitive_ids(words, start, stop):
  """Maps word.upper() -> lowest id among words[start:stop], plus canonical ids.

  Returns:
    (dict upper-word -> id, int array canon with canon[i - start] = id standing
    for words[i]).
  """
  lookup = {}
  canon = np.empty(stop - start, dtype=np.int64)
  for i in range(start, stop):
    key = words[i].upper()
    canon[i - start] = lookup.setdefault(key, i)
  return lookup, canon


def numpy_best(unit):
  """The default `best` of analogy_accuracy: numpy's product, masking and argmax."""

  def best(query, rows, cols):
    scores = query @ unit.T  # [B, R]
    scores[rows, cols] = -np.inf
    return np.argmax(scores, axis=1)

  return best


def analogy_accuracy(vectors, vocab_words, analogies, restrict_vocab=30000, best=None,
                     sample=None):
  """Accuracy on word analogies a : b :: c : d with 3CosAdd.

  The answer to a question is argmax over candidate words w of
  cos(w, b^ - a^ + c^) (x^ = x / |x|), over ids 1..restrict_vocab, excluding a,
  b and c (and their case variants). A question counts as seen only if all of
  a, b, c, d are among those ids; others are skipped.

  Cost: the seen questions of every section are scored together, `_BATCH` at a time, as one
  [questions, dim] x [dim, restrict_vocab] product; then a, b and c (and their case
  variants) are masked and the best remaining candidate taken. Only rows
  1..restrict_vocab of `vectors` are read.

  Args:
    vectors: [vocab_size, dim] table (array or tf.Variable), rows in id order.
    vocab_words: list of vocab_size words in id order; vocab_words[0] is UNK.
    analogies: list of (section, [(a, b, c, d), ...]) as from
      data.evalsets.load_analogies().
    restrict_vocab: number of most frequent words (UNK not counted) searched.
    best: how the candidates are scored: best(unit) returns a function (query [B, dim],
      rows, cols) -> [B] row of the best candidate of each query, where scores[rows, cols]
      (the question's own words) are excluded; default `numpy_best`. (word2vec/evaluate.py
      passes TensorFlow's product, which is 2x faster on 2 cores; tested equal.)
    sample: when set and more questions are seen, score only `sample` of the seen questions,
      drawn with a fixed seed: the same questions at every call with the same vocabulary,
      so figures of one run's evaluations compare (word2vec/evaluate.py's evaluations
      during training). "correct", "seen" and the accuracies are then the sample's.

  Returns:
    dict with
      "accuracy": correct / seen over all sections (0.0 when nothing was seen,
        as gensim reports),
      "correct", "seen": ints,
      "questions": number of questions in `analogies` (seen + skipped),
      "sections": dict section -> {"accuracy", "correct", "seen", "questions"},
        in file order.
  """
  questions = Analogies(vocab_words, analogies, restrict_vocab)
  if sample is not None:
    questions = questions.sample(sample)
  return questions.accuracy(vectors, best)


class Analogies:
  """analogy_accuracy's questions prepared for one vocabulary, to score several tables
  (the evaluations of a run) without repeating the word lookups: `accuracy(vectors, best)`
  is analogy_accuracy(vectors, vocab_words, analogies, restrict_vocab, best), and
  `sample(n).accuracy(vectors, best)` the same with sample=n."""

  def __init__(self, vocab_words, analogies, restrict_vocab=30000):
    self.vocab_words = vocab_words
    self.analogies = analogies
    self.stop = min(int(restrict_vocab), len(vocab_words) - 1) + 1
    lookup, canon = _case_insensitive_ids(vocab_words, 1, self.stop)
    self.canon = canon - 1  # work in row numbers
    lookup = {k: v - 1 for k, v in lookup.items()}
    # Rows whose case-insensitive group has more than one member (rare).
    groups = {}
    for row, c in enumerate(self.canon.tolist()):
      groups.setdefault(c, []).append(row)
    variants = {c: rows for c, rows in groups.items() if len(rows) > 1}

    # The seen questions of all sections, as rows [Q, 4], with their section numbers [Q].
    rows, section_of = [], []
    row_of = {}  # each distinct question word looked up once
    for s, (_, questions) in enumerate(analogies):
      for q in questions:
        for w in q:
          if w not in row_of:
            row_of[w] = lookup.get(w.upper())
        r = [row_of[w] for w in q]
        if None not in r:
          rows.append(r)
          section_of.append(s)
    self._variants = variants
    self._set_rows(np.asarray(rows, dtype=np.int64).reshape(-1, 4),
                   np.asarray(section_of, dtype=np.int64))

  def _set_rows(self, rows, section_of, sample=None):
    if sample is not None and rows.shape[0] > sample:
      keep = np.sort(np.random.default_rng(_SAMPLE_SEED).choice(rows.shape[0], int(sample),
                                                                 replace=False))
      rows, section_of = rows[keep], section_of[keep]
    self.rows, self.section_of = rows, section_of
    # Per batch of _BATCH questions, the excluded (question, row) cells: a, b, c and their
    # case variants.
    self.excluded = []
    for start in range(0, rows.shape[0], _BATCH):
      batch = rows[start:start + _BATCH]
      excluded = [(i, v) for i, abc in enumerate(batch[:, :3].tolist()) for row in abc
                  for v in self._variants.get(row, (row,))]
      self.excluded.append(tuple(np.asarray(excluded, dtype=np.int64).reshape(-1, 2).T))

  def sample(self, sample):
    """These questions with analogy_accuracy's `sample` (from all the seen ones, not
    looked up again)."""
    sampled = copy.copy(self)
    sampled._set_rows(self.rows, self.section_of, sample)  # pylint: disable=protected-access
    return sampled

  def accuracy(self, vectors, best=None):
    """analogy_accuracy's result for the table `vectors`."""
    _check_table(vectors, self.vocab_words)
    rows, analogies = self.rows, self.analogies
    unit = _unit_rows(vectors[1:self.stop])  # candidate rows; row r is id r + 1: [R, dim]
    hit = np.zeros(rows.shape[0], dtype=bool)
    best = (best or numpy_best)(unit)
    for k, start in enumerate(range(0, rows.shape[0], _BATCH)):
      batch = rows[start:start + _BATCH]  # [B, 4]
      a, b, c, d = batch.T
      query = unit[b] - unit[a] + unit[c]  # 3CosAdd query per question: [B, dim]
      ex_rows, ex_cols = self.excluded[k]
      predicted = best(query, ex_rows, ex_cols)
      hit[start:start + len(batch)] = self.canon[predicted] == d
    correct_by = np.bincount(self.section_of, weights=hit, minlength=len(analogies))
    seen_by = np.bincount(self.section_of, minlength=len(analogies))

    result = {"sections": {}}
    total_correct = total_seen = total_questions = 0
    for s, (section, questions) in enumerate(analogies):
      correct, seen = int(correct_by[s]), int(seen_by[s])
      result["sections"][section] = {
          "accuracy": correct / seen if seen else 0.0, "correct": correct, "seen": seen,
          "questions": len(questions)}
      total_correct += correct
      total_seen += seen
      total_questions += len(questions)
    result.update(accuracy=total_correct / total_seen if total_seen else 0.0,
                  correct=total_correct, seen=total_seen, questions=total_questions)
    return result


def _average_ranks(x):
  """Ranks 1..n of x, ties getting the mean of their ranks (scipy's rankdata)."""
  x = np.asarray(x, dtype=np.float64)
  order = np.argsort(x, kind="mergesort")
  sorted_x = x[order]
  # Start of each run of equal values.
  starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
  ends = np.r_[starts[1:], len(x)]
  mean_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
  ranks = np.empty(len(x), dtype=np.float64)
  ranks[order] = np.repeat(mean_rank, ends - starts)
  return ranks


def spearman(x, y):
  """Spearman rank correlation with average ranks for ties; nan if undefined."""
  rx, ry = _average_ranks(x), _average_ranks(y)
  if len(rx) < 2:
    return float("nan")
  rx -= rx.mean()
  ry -= ry.mean()
  denom = np.sqrt(np.dot(rx, rx) * np.dot(ry, ry))
  return float(np.dot(rx, ry) / denom) if denom > 0 else float("nan")


def case_insensitive_index(vocab_index):
  """word.upper() -> the lowest id of its case variants, ids >= 1 (UNK never matches).

  Build it once and pass it to similarity_spearman as `upper_index` for a big vocabulary.
  """
  lookup = {}
  for w, i in vocab_index.items():
    if i > 0:
      key = w.upper()
      if lookup.get(key, i) >= i:
        lookup[key] = i
  return lookup


def similarity_spearman(vectors, vocab_index, pairs, restrict_vocab=None, upper_index=None):
  """Spearman correlation between cosine similarities and human scores.

  Args:
    vectors: [vocab_size, dim] table in id order (array or tf.Variable; only the rows of the
      pairs' words are read).
    vocab_index: dict word -> id (id 0, UNK, is never matched).
    pairs: list of (word1, word2, score), e.g. data.evalsets.load_similarity().
    restrict_vocab: only ids 1..restrict_vocab count as known (None: all);
      gensim's evaluate_word_pairs defaults to 300000.
    upper_index: case_insensitive_index(vocab_index), if already built.

  Returns:
    (rho, oov_fraction): rho over the pairs whose two words are known (nan if
    fewer than two such pairs), and the fraction in [0, 1] of pairs skipped
    because a word is unknown (gensim reports the same as a percentage).
  """
  limit = vectors.shape[0] if restrict_vocab is None else int(restrict_vocab) + 1
  # The lowest id of a word's case variants is below `limit` iff some variant is.
  lookup = upper_index if upper_index is not None else case_insensitive_index(vocab_index)
  gold, left, right = [], [], []
  for w1, w2, score in pairs:
    i, j = lookup.get(w1.upper()), lookup.get(w2.upper())
    if i is None or j is None or i >= limit or j >= limit:
      continue
    gold.append(score)
    left.append(i)
    right.append(j)
  oov = (len(pairs) - len(gold)) / len(pairs) if pairs else 0.0
  if len(gold) < 2:
    return float("nan"), oov
  left_unit = _unit_rows(vectors[np.asarray(left)])
  right_unit = _unit_rows(vectors[np.asarray(right)])
  cosines = np.sum(left_unit * right_unit, axis=1)
  return spearman(gold, cosines), oov


def _query_id(vocab_words, word_or_id):
  if isinstance(word_or_id, (int, np.integer)):
    query = int(word_or_id)
    if not 0 <= query < len(vocab_words):
      raise ValueError(f"id {query} is outside the vocabulary (0..{len(vocab_words) - 1})")
    return query
  try:
    return vocab_words.index(word_or_id)
  except ValueError:
    raise ValueError(f"{word_or_id!r} is not in the vocabulary") from None


def nearest_neighbours(vectors, vocab_words, word_or_id, k=10):
  """The k words with the highest cosine similarity to a word.

  Args:
    vectors: [vocab_size, dim] table in id order (array or tf.Variable).
    vocab_words: list of words in id order (vocab_words[0] is UNK).
    word_or_id: the query word (str, exact match) or its id (int).
    k: number of neighbours.

  Returns:
    list of (word, cosine) pairs, most similar first (ties: lower id first), without the
    query word itself and without UNK.

  Raises:
    ValueError: the word is not in the vocabulary / the id is out of range.
  """
  return nearest_neighbours_many(vectors, vocab_words, [word_or_id], k)[0]


def nearest_neighbours_many(vectors, vocab_words, queries, k=10):
  """nearest_neighbours of several words in one pass over the table.

  The table is read `_ROW_CHUNK` rows at a time, normalised, scored against every query and
  reduced to a running top-k: memory is O(chunk x dim), never a copy of the table.

  Returns:
    list (one per query) of lists of (word, cosine) pairs.
  """
  _check_table(vectors, vocab_words)
  ids = [_query_id(vocab_words, q) for q in queries]
  n_rows = len(vocab_words)
  if not ids:
    return []
  q_unit = _unit_rows(vectors[np.asarray(ids)])  # [n_queries, dim]
  ks = [max(0, min(int(k), n_rows - 2 if q != 0 else n_rows - 1)) for q in ids]
  k_max = max(ks)
  if k_max == 0:
    return [[] for _ in ids]
  best_ids = np.zeros((len(ids), 0), np.int64)
  best_cos = np.zeros((len(ids), 0), np.float32)
  query_ids = np.asarray(ids)[:, None]
  for start in range(0, n_rows, _ROW_CHUNK):
    stop = min(start + _ROW_CHUNK, n_rows)
    cos = q_unit @ _unit_rows(vectors[start:stop]).T  # [n_queries, chunk]
    row_ids = np.arange(start, stop)
    cos[(row_ids[None, :] == query_ids) | (row_ids[None, :] == 0)] = -np.inf
    take = min(k_max, stop - start)
    top = np.argsort(-cos, axis=1, kind="stable")[:, :take]  # ties: lower id first
    best_ids = np.concatenate([best_ids, top + start], axis=1)
    best_cos = np.concatenate([best_cos, np.take_along_axis(cos, top, axis=1)], axis=1)
    # Keep the k best so far, by cosine then id.
    order = np.lexsort((best_ids, -best_cos), axis=1)[:, :k_max]
    best_ids = np.take_along_axis(best_ids, order, axis=1)
    best_cos = np.take_along_axis(best_cos, order, axis=1)
  return [[(vocab_words[i], float(c)) for i, c in zip(best_ids[n, :ks[n]].tolist(),
                                                     best_cos[n, :ks[n]].tolist())]
          for n in range(len(ids))]
