"""Training examples for word2vec: subsampling, dynamic windows, runs of text.

Training reads runs of consecutive centres with their text (`BlockStream`, both models);
`skipgram_pairs` and `cbow_examples` list the same examples one by one (held-out evaluation,
tests). Everything is vectorised numpy over chunks of token ids, so memory is bounded by the
chunk size, not the corpus; a thread builds blocks ahead of the train step
(`word2vec.inputs.BlockPrefetcher`) and the training loop reads them from it.
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


# Minibatches (both models) are made of runs of this many consecutive centres (or of the
# largest divisor of the batch size below it), each run from another place of the chunk.
RUN_LENGTH = 64


def run_layout(batch_size):
  """(run length L, runs per minibatch R) of minibatches of `batch_size` centres."""
  length = math.gcd(batch_size, RUN_LENGTH)
  return length, batch_size // length


def text_runs(kept, reduced, batch, window, halo, final):
  """Cuts a stream of kept ids into runs of `batch` consecutive centres.

  Each run is the window of text its centres and their contexts live in: `batch + 2 * window`
  ids, the centres in the middle, 0 where there is no word (before the start of the text,
  after its end). A minibatch is made of R such runs (`run_layout`); see
  `kernels.skipgram_window_sgd` and `kernels.cbow_window_sgd` (word2vec/kernels.py).

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


class BlockStream:
  """Streams blocks of shuffled training runs from an id array, chunk by chunk.

  A block holds `steps_per_call` minibatches of `batch_size` centres, given as runs of
  consecutive centres with the text around them (`run_layout`, `text_runs`): skip-gram
  trains every (centre, context) pair of a run's windows, CBOW every centre from its
  context. Each chunk of `chunk_tokens` ids is subsampled and given reduced windows with
  its own generator seeded by (seed, epoch, chunk), and the runs completed in it are
  shuffled with that generator, so an interrupted run that restarts at a chunk boundary
  sees the same runs for every later chunk as an uninterrupted one (the first run then
  starts at the resumed chunk). Runs continue across chunk boundaries within an epoch (the
  ids not yet cut into runs are carried into the next chunk), and so do the runs left over
  when a chunk's runs do not fill whole blocks; the runs left at the end of an epoch
  (fewer than one block) are dropped.

  Reduced windows: CBOW draws one per centre, as word2vec. Skip-gram draws one per block
  (uniform in 1..window, so each centre's window has word2vec's distribution), shared by
  its centres: the compiled step then computes exactly the pairs of that window
  (`kernels.skipgram_window_sgd`), where per-centre windows leave 40% of its slots empty.
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

  @property
  def input_width(self):
    """Columns of a block's inputs: R * (L + 2 * window) (`run_layout`)."""
    length, runs = run_layout(self.batch_size)
    return runs * (length + 2 * self.window)

  def expected_blocks_per_chunk(self):
    """About how many blocks one chunk gives (for sizing a prefetch buffer)."""
    counts = np.bincount(np.asarray(self.ids[:self.chunk_tokens]),
                         minlength=self.keep_prob.shape[0])
    counts[0] = 0
    kept = float((counts * self.keep_prob).sum())
    return kept / (self.batch_size * self.steps_per_call)

  def all_blocks(self, epoch, start_chunk, epochs):
    """`blocks` of epochs `epoch`..`epochs - 1`, the first one from `start_chunk`."""
    for e in range(epoch, epochs):
      yield from self.blocks(e, start_chunk if e == epoch else 0)

  def _run_chunks(self, epoch, start_chunk):
    """(chunk index, (windows, reduced, centres)) of each chunk: the runs of L consecutive
    centres with their text completed in it (`text_runs`), shuffled."""
    w = self.window
    length, _ = run_layout(self.batch_size)
    empty = np.zeros(0, np.int32)
    kept, reduced, halo = empty, empty, np.zeros(w, np.int32)
    for chunk_index in range(start_chunk, self.num_chunks):
      rng = np.random.default_rng([self.seed, epoch, chunk_index])
      start = chunk_index * self.chunk_tokens
      chunk = np.asarray(self.ids[start:start + self.chunk_tokens])
      new = subsample(chunk, self.keep_prob, rng)
      kept = np.concatenate([kept, new])
      reduced = np.concatenate([reduced, reduced_windows(new.shape[0], w, rng)])
      windows, red, centres, (kept, reduced, halo) = text_runs(
          kept, reduced, length, w, halo, final=chunk_index == self.num_chunks - 1)
      perm = rng.permutation(windows.shape[0])
      yield chunk_index, (windows[perm], red[perm], centres[perm])

  def blocks(self, epoch, start_chunk=0):
    """Yields dicts with inputs, lengths, targets and where the block sits in the epoch.

    Keys: inputs int32 [steps, R * (L + 2w)], each minibatch's R runs of L centres with
    their text (`run_layout`); lengths int32 [steps, batch] the centres' reduced windows
    (for skip-gram one per block); targets int32 [steps, batch] the centres; epoch;
    chunk (index of the chunk the block came from); chunk_done (True for the last block of
    a chunk: a safe point to checkpoint, resuming at chunk + 1); tokens (corpus tokens
    consumed in this epoch up to this block, for the learning-rate schedule and progress).
    """
    steps, batch = self.steps_per_call, self.batch_size
    _, runs = run_layout(batch)
    per_block = steps * runs
    carry = None  # runs left over from the previous chunk
    for chunk_index, units in self._run_chunks(epoch, start_chunk):
      if carry is not None:
        units = tuple(np.concatenate([c, u]) for c, u in zip(carry, units))
      n_blocks = units[0].shape[0] // per_block
      chunk_start = chunk_index * self.chunk_tokens
      chunk_len = min(self.chunk_tokens, self.num_tokens - chunk_start)
      if self.model == "skipgram":
        rng = np.random.default_rng([self.seed, epoch, chunk_index, 1])
        block_windows = reduced_windows(n_blocks, self.window, rng)
      for b in range(n_blocks):
        windows, red, centres = (u[b * per_block:(b + 1) * per_block] for u in units)
        red = red.reshape(steps, batch)
        if self.model == "skipgram":
          red = np.full((steps, batch), block_windows[b], np.int32)
        yield {
            "inputs": windows.reshape(steps, -1),
            "lengths": red,
            "targets": centres.reshape(steps, batch),
            "epoch": epoch,
            "chunk": chunk_index,
            "chunk_done": b == n_blocks - 1,
            "tokens": chunk_start + chunk_len * (b + 1) / n_blocks,
        }
      carry = tuple(u[n_blocks * per_block:] for u in units)
