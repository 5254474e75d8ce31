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
import numpy as np

_BATCH = 256  # questions scored per matrix multiply: [256, 30000] float32 = 31 MB


def _unit_rows(vectors):
  """Rows scaled to unit L2 norm, as float32; all-zero rows stay zero."""
  v = np.asarray(vectors, dtype=np.float32)
  norms = np.linalg.norm(v, axis=1, keepdims=True)
  return v / np.maximum(norms, np.finfo(np.float32).tiny)


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


def analogy_accuracy(vectors, vocab_words, analogies, restrict_vocab=30000):
  """Accuracy on word analogies a : b :: c : d with 3CosAdd.

  The answer to a question is argmax over candidate words w of
  cos(w, b^ - a^ + c^) (x^ = x / |x|), over ids 1..restrict_vocab, excluding a,
  b and c (and their case variants). A question counts as seen only if all of
  a, b, c, d are among those ids; others are skipped.

  Args:
    vectors: [vocab_size, dim] array, rows in id order (frequency order).
    vocab_words: list of vocab_size words in id order; vocab_words[0] is UNK.
    analogies: list of (section, [(a, b, c, d), ...]) as from
      data.evalsets.load_analogies().
    restrict_vocab: number of most frequent words (UNK not counted) searched.

  Returns:
    dict with
      "accuracy": correct / seen over all sections (0.0 when nothing was seen,
        as gensim reports),
      "correct", "seen": ints,
      "questions": number of questions in `analogies` (seen + skipped),
      "sections": dict section -> {"accuracy", "correct", "seen", "questions"},
        in file order.
  """
  vectors = np.asarray(vectors)
  if vectors.ndim != 2 or vectors.shape[0] != len(vocab_words):
    raise ValueError(f"vectors {vectors.shape} do not match {len(vocab_words)} words")
  stop = min(int(restrict_vocab), len(vocab_words) - 1) + 1
  unit = _unit_rows(vectors[1:stop])  # candidate rows; row r is id r + 1
  lookup, canon = _case_insensitive_ids(vocab_words, 1, stop)
  canon -= 1  # work in row numbers
  lookup = {k: v - 1 for k, v in lookup.items()}
  # Rows whose case-insensitive group has more than one member (rare).
  groups = {}
  for row, c in enumerate(canon.tolist()):
    groups.setdefault(c, []).append(row)
  variants = {c: rows for c, rows in groups.items() if len(rows) > 1}

  result = {"sections": {}}
  total_correct = total_seen = total_questions = 0
  for section, questions in analogies:
    rows = []
    for q in questions:
      r = [lookup.get(w.upper()) for w in q]
      if None not in r:
        rows.append(r)
    correct = 0
    for start in range(0, len(rows), _BATCH):
      batch = np.asarray(rows[start:start + _BATCH], dtype=np.int64)  # [B, 4]
      a, b, c, d = batch.T
      # 3CosAdd query per question: [B, dim]
      query = unit[b] - unit[a] + unit[c]
      scores = query @ unit.T  # [B, candidates]
      idx = np.arange(len(batch))
      for col in (a, b, c):
        scores[idx, col] = -np.inf
      if variants:
        for i, abc in enumerate(batch[:, :3].tolist()):
          for row in abc:
            for v in variants.get(row, ()):
              scores[i, v] = -np.inf
      predicted = np.argmax(scores, axis=1)
      correct += int(np.sum(canon[predicted] == d))
    seen = len(rows)
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


def similarity_spearman(vectors, vocab_index, pairs, restrict_vocab=None):
  """Spearman correlation between cosine similarities and human scores.

  Args:
    vectors: [vocab_size, dim] array in id order.
    vocab_index: dict word -> id (id 0, UNK, is never matched).
    pairs: list of (word1, word2, score), e.g. data.evalsets.load_similarity().
    restrict_vocab: only ids 1..restrict_vocab count as known (None: all);
      gensim's evaluate_word_pairs defaults to 300000.

  Returns:
    (rho, oov_fraction): rho over the pairs whose two words are known (nan if
    fewer than two such pairs), and the fraction in [0, 1] of pairs skipped
    because a word is unknown (gensim reports the same as a percentage).
  """
  vectors = np.asarray(vectors)
  limit = vectors.shape[0] if restrict_vocab is None else int(restrict_vocab) + 1
  by_id = sorted((i, w) for w, i in vocab_index.items() if 0 < i < limit)
  lookup = {}
  for i, w in by_id:
    lookup.setdefault(w.upper(), i)
  gold, left, right = [], [], []
  for w1, w2, score in pairs:
    i, j = lookup.get(w1.upper()), lookup.get(w2.upper())
    if i is None or j is None:
      continue
    gold.append(score)
    left.append(i)
    right.append(j)
  oov = (len(pairs) - len(gold)) / len(pairs) if pairs else 0.0
  if len(gold) < 2:
    return float("nan"), oov
  left_unit = _unit_rows(vectors[left])
  right_unit = _unit_rows(vectors[right])
  cosines = np.sum(left_unit * right_unit, axis=1)
  return spearman(gold, cosines), oov


def nearest_neighbours(vectors, vocab_words, word_or_id, k=10):
  """The k words with the highest cosine similarity to a word.

  Args:
    vectors: [vocab_size, dim] array in id order.
    vocab_words: list of words in id order (vocab_words[0] is UNK).
    word_or_id: the query word (str, exact match) or its id (int).
    k: number of neighbours.

  Returns:
    list of (word, cosine) pairs, most similar first, without the query word
    itself and without UNK.

  Raises:
    ValueError: the word is not in the vocabulary / the id is out of range.
  """
  if isinstance(word_or_id, (int, np.integer)):
    query = int(word_or_id)
    if not 0 <= query < len(vocab_words):
      raise ValueError(f"id {query} is outside the vocabulary (0..{len(vocab_words) - 1})")
  else:
    try:
      query = vocab_words.index(word_or_id)
    except ValueError:
      raise ValueError(f"{word_or_id!r} is not in the vocabulary") from None
  unit = _unit_rows(vectors)
  cosines = unit @ unit[query]
  cosines[query] = -np.inf
  cosines[0] = -np.inf
  k = max(0, min(int(k), len(vocab_words) - 2 if query != 0 else len(vocab_words) - 1))
  if k == 0:
    return []
  top = np.argpartition(-cosines, k - 1)[:k]
  top = top[np.argsort(-cosines[top], kind="stable")]
  return [(vocab_words[i], float(cosines[i])) for i in top]
