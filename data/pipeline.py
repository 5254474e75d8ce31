"""Training examples for word2vec: subsampling, dynamic windows, skip-gram and CBOW batches.

Everything is vectorised numpy over chunks of token ids, so memory is bounded by the chunk
size, not the corpus; `tf.data` pulls the chunks through a generator and prefetches them so
that example generation overlaps the train step.
"""
import math

import numpy as np


def keep_probabilities(counts, sample):
  """Mikolov's subsampling: the probability of keeping each word id.

  As in word2vec.c and gensim: with f = count / total and threshold t = `sample`,
  P(keep) = (sqrt(f / t) + 1) * t / f, capped at 1. `sample` = 0 keeps everything.
  The total counts in-vocabulary words only (word2vec.c's `train_words`, gensim's
  `retain_total`): UNK's count (the out-of-vocabulary tokens) is left out of it.

  Args:
    counts: int array [vocab_size] of word counts (id 0 = UNK).
    sample: the threshold t, e.g. 1e-3.

  Returns:
    float64 array [vocab_size] in [0, 1]; words with count 0, and UNK, get 1 (UNK is
    dropped by `subsample` anyway).
  """
  counts = np.array(counts, dtype=np.float64)
  counts[0] = 0.0  # UNK: not part of the total.
  if sample <= 0:
    return np.ones_like(counts)
  total = counts.sum()
  threshold = sample * total
  with np.errstate(divide="ignore", invalid="ignore"):
    keep = (np.sqrt(counts / threshold) + 1.0) * threshold / counts
  keep[~np.isfinite(keep)] = 1.0
  return np.minimum(keep, 1.0)


def subsample(ids, keep_prob, rng, drop_id=0):
  """Drops `drop_id` (UNK) and randomly drops frequent words.

  Args:
    ids: int array [n] of token ids.
    keep_prob: float array [vocab_size] from `keep_probabilities`.
    rng: numpy Generator.
    drop_id: id never trained (UNK); None keeps it.

  Returns:
    int32 array [m <= n] of kept ids, in order (windows then span the dropped words, as in
    word2vec.c and gensim).
  """
  ids = np.asarray(ids)
  keep = rng.random(ids.shape[0]) < keep_prob[ids]
  if drop_id is not None:
    keep &= ids != drop_id
  return ids[keep].astype(np.int32, copy=False)


def reduced_windows(n, window, rng):
  """Per-centre effective window: `window - b` with b uniform in [0, window), as word2vec.

  Returns:
    int32 array [n] with values in 1..window.
  """
  return (window - rng.integers(0, window, size=n)).astype(np.int32)


def skipgram_pairs(ids, window, rng, reduced=None):
  """All (centre, context) pairs of a chunk of kept ids with dynamic windows.

  Args:
    ids: int32 [n] kept ids.
    window: maximum window size.
    rng: numpy Generator (used when `reduced` is None).
    reduced: optional int [n] per-centre effective window (for tests).

  Returns:
    (centres, contexts): two int32 arrays [num_pairs], grouped by offset (shuffle them).
  """
  n = ids.shape[0]
  if reduced is None:
    reduced = reduced_windows(n, window, rng)
  centres, contexts = [], []
  for offset in range(1, window + 1):
    if offset >= n:
      break
    # Centre i with context i + offset (needs reduced[i] >= offset) ...
    right = np.nonzero(reduced[:n - offset] >= offset)[0]
    centres.append(ids[right])
    contexts.append(ids[right + offset])
    # ... and centre i with context i - offset.
    left = np.nonzero(reduced[offset:] >= offset)[0] + offset
    centres.append(ids[left])
    contexts.append(ids[left - offset])
  if not centres:
    empty = np.zeros(0, np.int32)
    return empty, empty
  return np.concatenate(centres), np.concatenate(contexts)


def cbow_examples(ids, window, rng, reduced=None):
  """CBOW examples: (context ids padded to 2*window, context count, centre).

  Args:
    ids: int32 [n] kept ids.
    window: maximum window size.
    rng: numpy Generator (used when `reduced` is None).
    reduced: optional int [n] per-centre effective window (for tests).

  Returns:
    contexts: int32 [m, 2*window], padded with 0 (UNK, never a real context here).
    lengths: int32 [m] number of real context ids in each row (>= 1).
    centres: int32 [m].
    Centres without any context (a chunk of one word) are dropped.
  """
  n = ids.shape[0]
  if reduced is None:
    reduced = reduced_windows(n, window, rng)
  positions = np.arange(n)
  # Real context ids are packed to the front of each row in window order (-1, +1, -2, +2,
  # ...): `lengths` counts them and the rest of the row is padding (0).
  contexts = np.zeros((n, 2 * window), np.int32)
  lengths = np.zeros(n, np.int32)
  for offset in range(1, window + 1):
    for sign in (-1, 1):
      j = positions + sign * offset
      rows = np.nonzero((reduced >= offset) & (j >= 0) & (j < n))[0]
      contexts[rows, lengths[rows]] = ids[j[rows]]
      lengths[rows] += 1
  has = lengths > 0
  return contexts[has], lengths[has], ids[has]


# CBOW minibatches are made of runs of this many consecutive centres (or of the largest
# divisor of the batch size below it), each run from another place of the chunk.
CBOW_RUN_LENGTH = 64


def cbow_runs(batch_size):
  """(run length L, runs per minibatch R) of CBOW minibatches of `batch_size` centres."""
  length = math.gcd(batch_size, CBOW_RUN_LENGTH)
  return length, batch_size // length


def cbow_windows(kept, reduced, batch, window, halo, final):
  """Cuts a stream of kept ids into CBOW runs of `batch` consecutive centres.

  Each run is the window of text its centres and their contexts live in: `batch + 2 * window`
  ids, the centres in the middle, 0 where there is no word (before the start of the text,
  after its end). A minibatch is made of R such runs (`cbow_runs`); see
  `Word2Vec._cbow_window_sgd`.

  Args:
    kept: int32 [n] kept ids not yet used as centres, in text order.
    reduced: int32 [n] their reduced windows.
    batch: centres per run.
    window: maximum window w.
    halo: int32 [w] the ids just before kept[0] (zeros at the start of an epoch).
    final: True at the end of the epoch: the text ends after kept (its last minibatch may
      then end with fewer than w following words); otherwise a run is only cut when the w
      ids after its centres are known.

  Returns:
    windows: int32 [m, batch + 2w]; reduced windows: int32 [m, batch]; centres: int32
    [m, batch]; and (kept, reduced, halo) left over for the next call.
  """
  n = kept.shape[0]
  m = n // batch if final else max(0, (n - window) // batch)
  text = np.concatenate([halo, kept, np.zeros(window, np.int32)]).astype(np.int32)
  starts = np.arange(m) * batch
  windows = text[starts[:, None] + np.arange(batch + 2 * window)[None, :]]
  used = m * batch
  windows = windows.reshape(m, batch + 2 * window)
  return (windows, reduced[:used].reshape(m, batch), kept[:used].reshape(m, batch),
          (kept[used:], reduced[used:], text[used:used + window]))


def segment_permutation(n, rng, segment=32):
  """A shuffle of range(n) that moves runs of `segment` consecutive items together.

  Used for skip-gram pairs, which come grouped by offset, so a run holds `segment` different
  centres (no row repeats within a run). Ten times cheaper than `rng.permutation(n)` for
  millions of examples (the permutation of
  n/segment runs is small and the gather is sequential within a run), and enough for SGD:
  a minibatch draws its runs from random places of the chunk, and a run holds examples of
  `segment` consecutive positions, as word2vec itself visits them.

  Returns:
    int64 array [n], a permutation of range(n).
  """
  runs = -(-n // segment)
  order = rng.permutation(runs)
  idx = (order[:, None] * segment + np.arange(segment)).ravel()
  return idx[idx < n]


class BlockStream:
  """Streams blocks of shuffled training examples from an id array, chunk by chunk.

  A block holds `steps_per_call` minibatches of `batch_size` examples. Each chunk of
  `chunk_tokens` ids is subsampled, windowed and shuffled with its own generator seeded by
  (seed, epoch, chunk), so an interrupted run that restarts at a chunk boundary sees the same
  examples for every later chunk as an uninterrupted one. Examples left over at the end of a
  chunk are carried into the next one; those left at the end of an epoch (fewer than one
  block) are dropped, and so are those carried past the chunk_done block a run resumes
  after (fewer than one block): blocks after a resume hold the same examples as the
  uninterrupted pass, but not cut at the same places unless nothing was carried.

  Skip-gram examples are (centre, context) pairs shuffled by runs of 32. CBOW examples are
  runs of consecutive centres with the text around them (`cbow_runs`, `cbow_windows`),
  the runs of a chunk shuffled; runs continue across chunk boundaries within an epoch
  (after a resume, the first run starts at the resumed chunk).
  """

  def __init__(self, ids, keep_prob, model, window, batch_size, steps_per_call, seed,
               chunk_tokens=1 << 20):
    """Args: ids: int array [n] (a memmap is fine); keep_prob: [vocab] from
    `keep_probabilities`; model: "skipgram" or "cbow"; the rest as named."""
    self.ids = ids
    self.keep_prob = keep_prob
    self.model = model
    self.window = window
    self.batch_size = batch_size
    self.steps_per_call = steps_per_call
    self.seed = seed
    self.chunk_tokens = int(chunk_tokens)
    self.num_tokens = int(ids.shape[0])
    self.num_chunks = max(1, -(-self.num_tokens // self.chunk_tokens))

  def _examples(self, epoch, chunk_index):
    """Skip-gram (centres, empty, contexts) of a chunk, shuffled by runs of 32 pairs."""
    rng = np.random.default_rng([self.seed, epoch, chunk_index])
    start = chunk_index * self.chunk_tokens
    chunk = np.asarray(self.ids[start:start + self.chunk_tokens])
    kept = subsample(chunk, self.keep_prob, rng)
    centres, contexts = skipgram_pairs(kept, self.window, rng)
    perm = segment_permutation(centres.shape[0], rng)
    return centres[perm], np.zeros(0, np.int32), contexts[perm]

  @property
  def input_width(self):
    """Columns of a block's inputs: batch_size (skip-gram), R * (L + 2 * window) (CBOW)."""
    if self.model == "skipgram":
      return self.batch_size
    length, runs = cbow_runs(self.batch_size)
    return runs * (length + 2 * self.window)

  def expected_blocks_per_chunk(self):
    """About how many blocks one chunk gives (for sizing a prefetch buffer)."""
    counts = np.bincount(np.asarray(self.ids[:self.chunk_tokens]),
                         minlength=self.keep_prob.shape[0])
    counts[0] = 0
    kept = float((counts * self.keep_prob).sum())
    per_kept = (self.window + 1) if self.model == "skipgram" else 1.0
    return kept * per_kept / (self.batch_size * self.steps_per_call)

  def all_blocks(self, epoch, start_chunk, epochs):
    """`blocks` of epochs `epoch`..`epochs - 1`, the first one from `start_chunk`."""
    for e in range(epoch, epochs):
      yield from self.blocks(e, start_chunk if e == epoch else 0)

  def _cbow_chunks(self, epoch, start_chunk):
    """(chunk index, (windows, reduced, centres)) of each chunk: its runs of L consecutive
    centres with their text (cbow_runs, cbow_windows), shuffled; runs continue across chunk
    boundaries (the ids not yet cut into runs are carried into the next chunk)."""
    w = self.window
    length, _ = cbow_runs(self.batch_size)
    empty = np.zeros(0, np.int32)
    kept, reduced, halo = empty, empty, np.zeros(w, np.int32)
    for chunk_index in range(start_chunk, self.num_chunks):
      rng = np.random.default_rng([self.seed, epoch, chunk_index])
      start = chunk_index * self.chunk_tokens
      chunk = np.asarray(self.ids[start:start + self.chunk_tokens])
      new = subsample(chunk, self.keep_prob, rng)
      kept = np.concatenate([kept, new])
      reduced = np.concatenate([reduced, reduced_windows(new.shape[0], w, rng)])
      windows, red, centres, (kept, reduced, halo) = cbow_windows(
          kept, reduced, length, w, halo, final=chunk_index == self.num_chunks - 1)
      perm = rng.permutation(windows.shape[0])
      yield chunk_index, (windows[perm], red[perm], centres[perm])

  def blocks(self, epoch, start_chunk=0):
    """Yields dicts with inputs, lengths, targets and where the block sits in the epoch.

    Keys: inputs int32 [steps, input_width] (skip-gram centres, or CBOW's R runs of L
    centres with their text, see `cbow_runs`); lengths int32 [steps, batch] (zeros for
    skip-gram, reduced windows for CBOW); targets int32 [steps, batch] (contexts for
    skip-gram, centres for CBOW); epoch; chunk (index of the chunk the block came from);
    chunk_done (True for the last block of a chunk: a
    safe point to checkpoint, resuming at chunk + 1); tokens (corpus tokens consumed in
    this epoch up to this block, for the learning-rate schedule and progress).
    """
    steps, batch = self.steps_per_call, self.batch_size
    if self.model == "skipgram":
      chunks = ((k, self._examples(epoch, k)[::2]) for k in range(start_chunk,
                                                                   self.num_chunks))
      per_block = steps * batch
      zeros = np.zeros((steps, batch), np.int32)
      pack = lambda centres, contexts: (centres.reshape(steps, batch), zeros,
                                        contexts.reshape(steps, batch))
    else:
      chunks = self._cbow_chunks(epoch, start_chunk)
      _, runs = cbow_runs(batch)
      per_block = steps * runs
      pack = lambda windows, red, centres: (windows.reshape(steps, -1),
                                            red.reshape(steps, batch),
                                            centres.reshape(steps, batch))
    carry = None  # units (pairs or runs) left over from the previous chunk
    for chunk_index, units in chunks:
      if carry is not None:
        units = tuple(np.concatenate([c, u]) for c, u in zip(carry, units))
      n_blocks = units[0].shape[0] // per_block
      chunk_start = chunk_index * self.chunk_tokens
      chunk_len = min(self.chunk_tokens, self.num_tokens - chunk_start)
      for b in range(n_blocks):
        inputs, lengths, targets = pack(*(u[b * per_block:(b + 1) * per_block]
                                          for u in units))
        yield {
            "inputs": inputs,
            "lengths": lengths,
            "targets": targets,
            "epoch": epoch,
            "chunk": chunk_index,
            "chunk_done": b == n_blocks - 1,
            "tokens": chunk_start + chunk_len * (b + 1) / n_blocks,
        }
      carry = tuple(u[n_blocks * per_block:] for u in units)
