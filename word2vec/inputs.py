"""The inputs of a word2vec run: vocabulary, encoded ids and blocks of training examples.

corpus -> vocab.tsv + ids.int32 in the run directory (one tokenisation pass, cached by corpus
fingerprint, `prepare_data`) -> training and held-out ids (`split_ids`) -> blocks of
minibatches (data/pipeline.py BlockStream), generated ahead by a thread
(`BlockPrefetcher`) and fed to the compiled block as numpy arrays. Eval and export read the
saved vocabulary and ids (`load_vocab`, `saved_heldout_ids`), never the corpus.
"""
import contextlib
import json
import os
import queue
import threading
import time

import numpy as np
from absl import logging

from tf_embeddings.data import corpus as corpus_lib
from tf_embeddings.data.atomic import atomic_write
from tf_embeddings.data import tokenize_pool
from tf_embeddings.data.errors import UserError
from tf_embeddings.data.vocab import Vocabulary, VocabularyBuilder
from tf_embeddings.training import rundir as rundir_lib

VOCAB_FILE = "vocab.tsv"
IDS_FILE = "ids.int32"
IDS_META = "ids.json"
ENCODE_CHUNK = 1 << 22  # provisional ids mapped to final ids at a time (16 MB)


def _data_key(config):
  return {"corpus": config.corpus, "tokenizer": config.tokenizer,
          "min_count": config.min_count, "max_vocab_size": config.max_vocab_size}


class Stopped(Exception):
  """The corpus pass was asked to stop (prepare_data's `stop`)."""


def _check_stop(stop):
  if stop is not None and stop.is_set():
    raise Stopped("the corpus pass was stopped")


def prepare_data(config, require_cached=False, timings=None, vocab_workers=None, stop=None,
                 beside_import=False):
  """Builds (or reuses) vocab.tsv and the encoded id file in the run directory.

  They are reused only when they were built with the same data flags from the same corpus
  bytes (size, mtime and sha256 of every corpus file, see rundir.fingerprint).

  Args:
    config: the run's Config.
    require_cached: the run has checkpoints, so its vocabulary must be the cached one: a
      changed corpus is an error instead of a rebuild.
    timings: optional dict, gets the seconds of the "vocabulary" and "encoding" passes.
    vocab_workers: processes tokenising the corpus (data/tokenize_pool.py); None = by
      corpus size and cores. The result does not depend on it.
    stop: optional threading.Event, polled between batches: once set, the pass raises
      Stopped, leaving nothing half-written (as any failure).
    beside_import: TensorFlow is being imported meanwhile: worker processes from a smaller
      corpus (tokenize_pool.MIN_PARALLEL_BYTES_BESIDE_IMPORT), as tokenising here would
      hold the GIL the import needs.

  Returns:
    (vocab, ids): Vocabulary and a read-only int32 memmap [num_tokens] of the corpus.
  """
  os.makedirs(config.model_dir, exist_ok=True)
  vocab_path = os.path.join(config.model_dir, VOCAB_FILE)
  ids_path = os.path.join(config.model_dir, IDS_FILE)
  meta_path = os.path.join(config.model_dir, IDS_META)
  corpus = corpus_lib.resolve_corpus(config.corpus or None, tokenizer=config.tokenizer)
  key = dict(_data_key(config),
             files=rundir_lib.fingerprint(sorted({s.path for s in corpus.sources})))
  meta = None
  if all(os.path.exists(p) for p in (vocab_path, ids_path, meta_path)):
    try:
      with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    except (OSError, ValueError):
      meta = None
  if meta is not None and meta.get("key") == key:
    vocab = Vocabulary.load(vocab_path)
    ids = np.memmap(ids_path, dtype=np.int32, mode="r")
    if ids.shape[0] == meta.get("num_tokens"):
      logging.info("reusing %s (%d words) and %s (%d tokens)", vocab_path, len(vocab),
                   ids_path, ids.shape[0])
      return vocab, ids
  if require_cached:
    raise UserError(f"--corpus={config.corpus or '(bundled)'} is not the text the run in "
                    f"--model_dir={config.model_dir} was trained on (its files changed since, "
                    "or the run's vocab.tsv/ids.int32 are missing): restore them, use another "
                    "--model_dir, or --resume=false to start over")
  if meta is not None:
    logging.info("the corpus or the data flags changed: rebuilding %s and %s", vocab_path,
                 ids_path)
  with contextlib.suppress(FileNotFoundError):
    os.remove(meta_path)  # vocab and ids are reused only once both are complete
  # One tokenisation pass counts the words and writes their provisional ids (data/vocab.py
  # VocabularyBuilder), tokenised by worker processes on a big corpus
  # (data/tokenize_pool.py); encoding maps those to the final ids, chunk by chunk.
  start = time.monotonic()
  builder = VocabularyBuilder()
  provisional = ids_path + ".provisional"
  min_bytes = tokenize_pool.MIN_PARALLEL_BYTES_BESIDE_IMPORT if beside_import else None
  try:
    with open(provisional, "wb") as f, contextlib.closing(
        tokenize_pool.encoded_batches(corpus, vocab_workers, min_bytes)) as batches:
      for words, local in batches:
        _check_stop(stop)
        builder.add_distinct(words, local).tofile(f)
    vocab, lookup = builder.vocabulary(config.min_count, config.max_vocab_size or None)
    logging.info("vocabulary: %d words (UNK included), %d tokens, UNK count %d", len(vocab),
                 vocab.total_count, int(vocab.counts[0]))
    vocab.save(vocab_path)
    vocab_seconds = time.monotonic() - start
    start = time.monotonic()
    n = 0
    with open(provisional, "rb") as src, atomic_write(ids_path, "wb") as f:
      while True:  # read, not memory-mapped: the resident memory stays one chunk
        _check_stop(stop)
        pids = np.fromfile(src, dtype=np.int32, count=ENCODE_CHUNK)
        if not pids.shape[0]:
          break
        lookup[pids].tofile(f)
        n += pids.shape[0]
  finally:
    if os.path.exists(provisional):
      os.remove(provisional)
  encode_seconds = time.monotonic() - start
  logging.info("encoded %d tokens in %.1fs", n, encode_seconds)
  if timings is not None:
    timings.update(vocabulary=vocab_seconds, encoding=encode_seconds)
  if corpus.replaced_bytes:
    logging.warning("%d invalid UTF-8 bytes were replaced by U+FFFD", corpus.replaced_bytes)
  with atomic_write(meta_path) as f:
    json.dump({"key": key, "num_tokens": n, "corpus": corpus.describe()}, f)
  return vocab, np.memmap(ids_path, dtype=np.int32, mode="r")


def split_ids(ids, eval_fraction):
  """(train, heldout) views: the held-out slice is the last `eval_fraction` of the corpus."""
  n_eval = int(ids.shape[0] * eval_fraction)
  return ids[:ids.shape[0] - n_eval], ids[ids.shape[0] - n_eval:]


def load_vocab(model_dir):
  """The run's saved Vocabulary (vocab.tsv)."""
  return Vocabulary.load(os.path.join(model_dir, VOCAB_FILE))


def saved_heldout_ids(model_dir, eval_fraction):
  """The held-out ids of the run's saved ids.int32 (`split_ids`); empty if there is none."""
  ids_path = os.path.join(model_dir, IDS_FILE)
  if not os.path.exists(ids_path):
    return np.zeros(0, np.int32)
  return split_ids(np.memmap(ids_path, dtype=np.int32, mode="r"), eval_fraction)[1]


class _End:
  """Marks the end of the block stream (or carries the generator's exception)."""

  def __init__(self, error=None):
    self.error = error


class BlockPrefetcher:
  """Runs a block generator in a daemon thread, up to `size` blocks ahead of the consumer.

  The look-ahead used to be a tf.data `prefetch`. At the end of training, destroying the
  tf.data iterator left the main thread idle on the `for` line for 10-20 s in about one
  run in three (benchmarks/word2vec_loop_timing.py: training 40 s instead of 20 s). py-spy
  --native showed the iterator's destructor waiting for tf.data's autotuning thread
  (RootDataset's UnboundedThreadPool); the look-ahead became this thread. tf.data then only
  passed the blocks on (from_generator, no prefetch, no autotuning), and even so the
  compiled blocks ran 20-30% slower behind it than fed the prefetcher's numpy arrays
  directly (CBOW, stress corpus, 1 epoch: training 12.3-12.4 s vs 9.4-9.5 s), so the
  training loop now iterates this object itself.
  """

  def __init__(self, blocks, size):
    self._queue = queue.Queue(maxsize=max(1, int(size)))
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, args=(blocks,), daemon=True,
                                    name="word2vec-blocks")
    self._thread.start()

  def _put(self, item):
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def _run(self, blocks):
    try:
      for block in blocks:
        if not self._put(block):
          return
      self._put(_End())
    except BaseException as e:  # pylint: disable=broad-except
      self._put(_End(e))  # re-raised in the consumer

  def __iter__(self):
    while True:
      item = self._queue.get()
      if isinstance(item, _End):
        if item.error is not None:
          raise item.error
        return
      yield item

  def close(self):
    """Stops the thread (it may be blocked on a full queue)."""
    self._stop.set()
    self._thread.join(timeout=10)


def block_prefetcher(stream, epoch, start_chunk, config):
  """The blocks of every remaining epoch, generated about one chunk ahead.

  One stream spans the epochs, so an epoch boundary does not restart the generator, and
  the buffer holds about one chunk's blocks: the generator makes a whole chunk before its
  first block, and a smaller buffer would run dry while it does.
  """
  block_bytes = 4 * config.steps_per_call * (2 * config.batch_size + stream.input_width)
  cap = max(2, (256 << 20) // block_bytes)  # at most 256 MiB of prefetched blocks
  size = int(min(cap, max(2, 1.25 * stream.expected_blocks_per_chunk() + 2)))
  return BlockPrefetcher(stream.all_blocks(epoch, start_chunk, config.epochs), size)
