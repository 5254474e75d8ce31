"""The word vocabulary: frequency-sorted ids, UNK at id 0, saved as vocab.tsv.

Ids are assigned in descending count order, ties broken by first appearance in
the corpus (not alphabetically), so id order is frequency rank. TensorFlow's
log-uniform candidate sampler assumes exactly this (P(id) decreases with id).

Id 0 is ``<unk>``. Its count is the total count of every dropped word: words
seen fewer than `min_count` times, and words cut off by `max_size`. A token
that is literally ``<unk>`` in the corpus (possible with the whitespace
tokenizer) is counted as UNK too. So ``total_count`` equals the number of
tokens in the corpus, and ``counts / total_count`` is the unigram distribution
of the encoded id stream.

``max_size`` (flag ``--max_vocab_size``) is the total number of ids INCLUDING
UNK, i.e. the number of rows of the embedding matrix: max_size=50000 keeps UNK
plus the 49,999 most frequent words (as in the TensorFlow word2vec tutorial).
"""
import collections
import itertools
import os
import time

import numpy as np
from absl import logging

from tf_embeddings.data.atomic import atomic_write
from tf_embeddings.data.errors import UserError

UNK = "<unk>"
_FORBIDDEN = ("\t", "\n", "\r")


class Vocabulary:
  """Word <-> id mapping with counts.

  Attributes:
    words: list of str in id order; words[0] == UNK.
    counts: np.int64 array, counts[i] = occurrences of words[i] in the corpus.
    index: dict word -> id.
  """

  UNK = UNK

  def __init__(self, words, counts):
    words = list(words)
    if not words or words[0] != UNK:
      raise ValueError(f"the first word must be {UNK!r}")
    counts = np.asarray(counts, dtype=np.int64)
    if counts.shape != (len(words),):
      raise ValueError(f"{len(words)} words but counts has shape {counts.shape}")
    self.words = words
    self.counts = counts
    self.index = {w: i for i, w in enumerate(words)}
    if len(self.index) != len(words):
      dup = [w for w, n in collections.Counter(words).items() if n > 1][:3]
      raise ValueError(f"duplicate words in vocabulary: {dup}")

  @classmethod
  def build(cls, token_chunks, min_count=5, max_size=None):
    """Counts tokens and builds the vocabulary.

    Args:
      token_chunks: iterable of lists of str tokens, in corpus order (e.g.
        Corpus.iter_token_chunks()).
      min_count: keep words seen at least this many times (>= 1).
      max_size: if set, at most this many ids in total, UNK included (>= 2).

    Returns:
      A Vocabulary.

    Raises:
      ValueError: bad arguments, or a token containing a tab or newline.
      UserError: no word reaches min_count (the corpus is too small).
    """
    _check_arguments(min_count, max_size)
    builder = VocabularyBuilder()
    for chunk in token_chunks:
      builder.add(chunk)
    return builder.vocabulary(min_count, max_size)[0]

  def __len__(self):
    return len(self.words)

  def __contains__(self, word):
    return word in self.index

  @property
  def total_count(self):
    """Total tokens in the corpus the vocabulary was built from (UNK included)."""
    return int(self.counts.sum())

  def encode(self, tokens):
    """Maps tokens to ids; words not in the vocabulary map to 0 (UNK).

    Args:
      tokens: sequence of str.

    Returns:
      np.ndarray of int32, shape [len(tokens)].
    """
    ids = map(self.index.get, tokens, itertools.repeat(0))
    return np.fromiter(ids, dtype=np.int32, count=len(tokens))

  def save(self, path):
    """Writes ``word<TAB>count`` lines in id order (UNK first), atomically."""
    for w in self.words:
      if not w or any(ch in w for ch in _FORBIDDEN):
        raise ValueError(f"word {w!r} is empty or contains a tab or newline: it cannot be "
                         "written to a .tsv vocabulary")
    with atomic_write(path) as f:
      for w, c in zip(self.words, self.counts.tolist()):
        f.write(f"{w}\t{c}\n")

  @classmethod
  def load(cls, path):
    """Reads a vocab.tsv written by `save`.

    Raises:
      UserError: missing file or malformed content, with the line number.
    """
    path = os.fspath(path)
    fix = "rebuild it by training again or pass the vocab.tsv of a finished run"
    if not os.path.isfile(path):
      raise UserError(f"vocabulary file '{path}' does not exist: {fix}")
    words, counts, seen = [], [], set()
    try:
      with open(path, encoding="utf-8", newline="\n") as f:
        for line_no, line in enumerate(f, 1):
          word, count, problem = _parse_line(line.rstrip("\n"), line_no, seen)
          if problem:
            raise UserError(f"vocabulary file '{path}' line {line_no} is malformed "
                            f"({problem}): expected 'word<TAB>count'; {fix}")
          seen.add(word)
          words.append(word)
          counts.append(count)
    except UnicodeDecodeError as e:
      raise UserError(f"vocabulary file '{path}' is not UTF-8 ({e.reason}): {fix}") from None
    if not words:
      raise UserError(f"vocabulary file '{path}' is empty: {fix}")
    return cls(words, counts)

  def __repr__(self):
    return f"Vocabulary({len(self):,} ids, {self.total_count:,} tokens)"


class VocabularyBuilder:
  """Counts tokens chunk by chunk, giving each distinct token a provisional id.

  Provisional ids are assigned in order of first appearance, in C (a defaultdict whose
  default is the next integer, mapped over the chunk), and counted with np.bincount. `add`
  returns them, so one tokenisation pass can both count the corpus and encode it: the ids
  written during the pass are mapped to the final ids afterwards with the lookup table
  `vocabulary` returns (a numpy gather, no second tokenisation). Memory grows with the
  number of distinct words, not with the corpus.
  """

  def __init__(self, log_every_secs=5.0):
    self._ids = collections.defaultdict(itertools.count().__next__)
    self._counts = np.zeros(1 << 16, np.int64)
    self.tokens = 0
    self._start = self._last_log = time.monotonic()
    self._log_every = log_every_secs

  def add(self, tokens):
    """Counts `tokens` (a list of str); returns their provisional ids, int32 [len(tokens)]."""
    return self._count(self._provisional(tokens))

  def add_distinct(self, words, local):
    """Counts a batch given as its distinct `words` (list of str, in order of first
    appearance) and `local`, int32 [n] the index of each token among them (what
    data/tokenize_pool.py's workers reply); returns the tokens' provisional ids, the same
    as `add` of the batch's tokens would."""
    return self._count(self._provisional(words)[local])

  def _provisional(self, words):
    return np.fromiter(map(self._ids.__getitem__, words), dtype=np.int32, count=len(words))

  def _count(self, ids):
    tokens = ids.shape[0]
    if len(self._ids) > self._counts.shape[0]:
      grown = np.zeros(max(2 * self._counts.shape[0], len(self._ids)), np.int64)
      grown[:self._counts.shape[0]] = self._counts
      self._counts = grown
    counted = np.bincount(ids)
    self._counts[:counted.shape[0]] += counted
    self.tokens += tokens
    now = time.monotonic()
    if now - self._last_log >= self._log_every:
      self._last_log = now
      logging.info("vocabulary: counted %s tokens, %s distinct (%s tokens/s)",
                   f"{self.tokens:,}", f"{len(self._ids):,}",
                   f"{self.tokens / (now - self._start):,.0f}")
    return ids

  def vocabulary(self, min_count=5, max_size=None):
    """The Vocabulary of everything added, and the provisional -> final id lookup table.

    Args:
      min_count: keep words seen at least this many times (>= 1).
      max_size: if set, at most this many ids in total, UNK included (>= 2).

    Returns:
      (Vocabulary, lookup): lookup is int32 [distinct tokens], the final id (0 = UNK) of
      each provisional id.

    Raises:
      ValueError: bad arguments, or a kept token containing a tab or newline.
      UserError: no word reaches min_count (the corpus is too small).
    """
    _check_arguments(min_count, max_size)
    words = list(self._ids)  # in provisional id order
    counts = self._counts[:len(words)]
    unk = self._ids.get(UNK)  # a literal <unk> token counts as UNK
    # Descending count, ties in order of first appearance (a stable sort of provisional ids).
    ranked = np.argsort(-counts, kind="stable")
    if unk is not None:
      ranked = ranked[ranked != unk]
    kept = ranked[counts[ranked] >= min_count]
    if max_size is not None:
      kept = kept[:max_size - 1]
    kept_words = [words[i] for i in kept.tolist()]
    for w in kept_words:
      if not w or any(ch in w for ch in _FORBIDDEN):
        raise ValueError(f"token {w!r} is empty or contains a tab/newline; tokenize first")
    total = int(counts.sum())
    if not kept_words:
      raise UserError(f"no word occurs at least {min_count} times in {total:,} tokens: "
                      "lower --min_count or use a bigger corpus")
    kept_counts = counts[kept]
    unk_count = total - int(kept_counts.sum())
    vocab = Vocabulary([UNK] + kept_words, np.concatenate([[unk_count], kept_counts]))
    lookup = np.zeros(len(words), np.int32)
    lookup[kept] = np.arange(1, len(kept) + 1, dtype=np.int32)
    distinct = len(words) - (unk is not None)
    logging.info(
        "vocabulary: %s ids (UNK + %s words with count >= %d%s) from %s distinct words; "
        "UNK covers %.2f%% of %s tokens", f"{len(vocab):,}", f"{len(kept_words):,}", min_count,
        f", max_size={max_size}" if max_size else "", f"{distinct:,}",
        100.0 * unk_count / max(total, 1), f"{total:,}")
    return vocab, lookup


def _check_arguments(min_count, max_size):
  if min_count < 1:
    raise ValueError(f"min_count must be >= 1, got {min_count}")
  if max_size is not None and max_size < 2:
    raise ValueError(f"max_size must be >= 2 (UNK plus one word), got {max_size}")


def _parse_line(line, line_no, seen):
  """Returns (word, count, None) for a valid vocab.tsv line, else (.., .., problem)."""
  parts = line.split("\t")
  if len(parts) != 2:
    return None, None, f"{len(parts)} tab-separated fields"
  word, count = parts
  if not word:
    return None, None, "empty word"
  if line_no == 1 and word != UNK:
    return None, None, f"first word must be {UNK}"
  if word in seen:
    return None, None, f"duplicate word {word!r}"
  try:
    count = int(count)
  except ValueError:
    return None, None, f"count {count!r} is not an integer"
  if count < 0:
    return None, None, "negative count"
  return word, count, None
