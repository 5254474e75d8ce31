"""word2vec's training blocks made by TensorFlow ops, for a parameter-server worker.

On a cluster (`--strategy=parameter_server`) the chief can make the blocks with numpy
(pipeline.BlockStream) and send each to the worker that trains it, or each worker can make
its own from its share of the encoded corpus: `worker_blocks` is that second input
(`--cluster_input=workers`), a tf.data pipeline with the same steps as BlockStream, run by
`ClusterCoordinator.create_per_worker_dataset` on each worker, where a Python generator
cannot run (it would run in the chief).

What a worker does, chunk by chunk of `chunk_tokens` ids of ids.int32 (read from the file,
so the workers must see the run directory: a shared file system, or the one machine of a
local cluster):

* chunks c with c % num_workers == worker index, from `start_chunk` on: a worker reads a
  share of the text, the workers together read each chunk once a pass;
* subsampling (pipeline.keep_probabilities' table) and one reduced window per centre, drawn
  with stateless random ops seeded by (seed, epoch, chunk): a chunk's examples do not
  depend on which worker makes them or when;
* runs of L consecutive kept centres with the `window` ids on either side
  (pipeline.run_layout, pipeline.text_runs), shuffled within the chunk.

Two differences from BlockStream, both at chunk edges (a chunk is 1M ids by default): a
run does not continue into the next chunk (the ids after a chunk's last whole run, fewer
than L, are dropped; the first and last runs see no context across the edge) and a block
may hold runs of two chunks of one worker. Skip-gram's reduced window is drawn per block
from (seed, epoch, worker, block), as BlockStream draws one per block.

The pipeline repeats after its last epoch (blocks may then hold runs of two passes): the
chief schedules the expected number of blocks
of a pass (`expected_blocks`), as TensorFlow's parameter-server training schedules
steps_per_epoch steps of a repeated dataset, and a worker that ran more blocks than its
share goes on into its next pass instead of failing.
"""
import numpy as np
import tensorflow as tf

from tf_embeddings.data import pipeline

# Salts of the stateless draws of one chunk (seed, salt + epoch, chunk).
_SUBSAMPLE, _WINDOWS, _SHUFFLE, _BLOCK_WINDOW = 0, 1, 2, 3


def _seed(seed, salt, epoch, index):
  """A stateless seed [2] from the run's seed and (salt, epoch, index)."""
  mixed = (tf.cast(salt, tf.int64) * (1 << 40) + tf.cast(epoch, tf.int64) * (1 << 24)
           + tf.cast(index, tf.int64))
  return tf.stack([tf.constant(seed, tf.int64), mixed])


def worker_chunk_tokens(num_tokens, chunk_tokens, num_workers):
  """The chunk size of worker_blocks: at most `chunk_tokens`, and the text cut into a
  multiple of num_workers chunks of equal size (the last shorter), so that the workers'
  shares differ by less than one chunk (3 chunks of 1M for 2 workers gave one worker twice
  the other's text: in a pass the first wrapped around its chunk while the second had not
  reached the end of its own)."""
  per_worker = -(-num_tokens // (num_workers * max(1, chunk_tokens)))  # chunks a worker
  return max(1, -(-num_tokens // (num_workers * per_worker)))


def worker_tokens(num_tokens, chunk_tokens, num_workers):
  """Training ids each worker reads a pass ([num_workers] ints; chunks of `chunk_tokens`
  dealt round-robin)."""
  num_chunks = max(1, -(-num_tokens // chunk_tokens))
  sizes = np.minimum(chunk_tokens, num_tokens - np.arange(num_chunks) * chunk_tokens)
  return [int(sizes[i::num_workers].sum()) for i in range(num_workers)]


def expected_blocks(counts, keep_prob, num_tokens, corpus_tokens, batch_size,
                    steps_per_call):
  """Blocks one pass over `num_tokens` training ids gives, expected: the vocabulary's
  counts (over `corpus_tokens`, held-out text included) times the keep probabilities,
  scaled to the training share, in blocks of batch_size x steps_per_call centres."""
  counts = np.asarray(counts, np.float64).copy()
  counts[0] = 0.0  # UNK is never a centre
  kept = float((counts * keep_prob).sum()) * num_tokens / max(corpus_tokens, 1)
  return int(kept // (batch_size * steps_per_call))


def worker_blocks(ids_path, num_tokens, keep_prob, model, window, batch_size,
                  steps_per_call, seed, chunk_tokens, epoch, start_chunk, epochs,
                  worker_index, num_workers, repeat=True):
  """The blocks one worker makes: a tf.data.Dataset of dicts inputs int32 [steps, R * (L +
  2w)], lengths int32 [steps, batch] and targets int32 [steps, batch], as
  pipeline.BlockStream.blocks (module docstring), for epochs `epoch`..`epochs - 1` (the
  first from `start_chunk`), then again from epoch `epoch`, without end (repeat=False:
  once, the blocks of whole units only).

  Args:
    ids_path: the run's ids.int32 (int32 ids, no header; its first `num_tokens` ids are
      the training text).
    keep_prob: float [vocab] from pipeline.keep_probabilities.
    worker_index: int or scalar tensor (tf.distribute.coordinator.
      experimental_get_current_worker_index() inside a per-worker dataset function).
    The rest as pipeline.BlockStream.
  """
  length, runs = pipeline.run_layout(batch_size)
  w = window
  num_chunks = max(1, -(-num_tokens // chunk_tokens))
  file_bytes = 4 * _file_tokens(ids_path)
  keep_table = tf.constant(np.asarray(keep_prob, np.float32))
  worker_index = tf.cast(worker_index, tf.int64)

  def chunks_of(e):
    first = tf.where(tf.equal(e, epoch), tf.constant(start_chunk, tf.int64),
                     tf.constant(0, tf.int64))
    chunks = tf.data.Dataset.range(num_chunks).filter(
        lambda c: tf.logical_and(c >= first, tf.equal(c % num_workers, worker_index)))
    return chunks.map(lambda c: (e, c))

  def read(e, c):
    start = c * chunk_tokens
    size = tf.minimum(tf.constant(chunk_tokens, tf.int64), num_tokens - start)
    records = tf.data.FixedLengthRecordDataset(
        ids_path, record_bytes=4 * size, header_bytes=4 * start,
        footer_bytes=file_bytes - 4 * (start + size))
    return records.map(lambda raw: (e, c, tf.io.decode_raw(raw, tf.int32)))

  def runs_of(e, c, ids):
    draw = tf.random.stateless_uniform(tf.shape(ids), _seed(seed, _SUBSAMPLE, e, c))
    kept = tf.boolean_mask(ids, tf.logical_and(draw < tf.gather(keep_table, ids),
                                               tf.not_equal(ids, 0)))
    count = tf.size(kept) // length  # whole runs
    used = count * length
    reduced = w - tf.random.stateless_uniform([used], _seed(seed, _WINDOWS, e, c),
                                              minval=0, maxval=w, dtype=tf.int32)
    text = tf.concat([tf.zeros([w], tf.int32), kept[:used], tf.zeros([w], tf.int32)], 0)
    starts = tf.range(count) * length
    windows = tf.gather(text, starts[:, None] + tf.range(length + 2 * w)[None, :])
    order = tf.argsort(tf.random.stateless_uniform([count], _seed(seed, _SHUFFLE, e, c)))
    return tf.data.Dataset.from_tensor_slices((
        tf.gather(windows, order),
        tf.gather(tf.reshape(reduced, [count, length]), order),
        tf.gather(tf.reshape(kept[:used], [count, length]), order)))

  def block(index, units):
    windows, reduced, centres = units
    lengths = tf.reshape(reduced, [steps_per_call, batch_size])
    if model == "skipgram":
      block_window = w - tf.random.stateless_uniform(
          [], _seed(seed, _BLOCK_WINDOW, worker_index, index), minval=0, maxval=w,
          dtype=tf.int32)
      lengths = tf.fill([steps_per_call, batch_size], block_window)
    return {"inputs": tf.reshape(windows, [steps_per_call, -1]),
            "lengths": lengths,
            "targets": tf.reshape(centres, [steps_per_call, batch_size])}

  passes = tf.data.Dataset.range(epoch, epochs).flat_map(chunks_of)
  if repeat:
    passes = passes.repeat()
  units = (passes.flat_map(read).flat_map(runs_of)
           .batch(runs * steps_per_call, drop_remainder=True))
  return units.enumerate().map(block).prefetch(2)


def _file_tokens(path):
  """int32 ids in the file at `path` (tf.io.gfile: local or remote file systems)."""
  size = tf.io.gfile.stat(path).length
  if size % 4:
    raise ValueError(f"{path}: {size} bytes is not a whole number of int32 ids")
  return size // 4
