"""The word2vec model: its three tables, and the compiled calls of the fused SGD step.

The variables are word2vec's: input vectors (the embeddings we export), output vectors and
output biases, initialised as word2vec.c does (inputs uniform in +-0.5/dim, outputs zero).
The step itself (NCE / sampled softmax head with hand-derived gradients, grouped negatives
drawn in-graph, the bounded row update, skip-gram and CBOW over runs of text, the block of
minibatches in one `tf.while_loop`) is word2vec/kernels.py, functions over the tables;
`Word2Vec` holds the XLA compilation boundaries (one `tf.function(jit_compile=True)` per
block program) and thin methods that call the kernels.
"""
import contextlib
import dataclasses
import functools

import numpy as np
import tensorflow as tf

from tf_embeddings.data.errors import UserError
from tf_embeddings.training.distribute import RowLayout
from tf_embeddings.training.distribute import gather_rows
from tf_embeddings.training.distribute import row_initial
from tf_embeddings.word2vec import config as config_lib
from tf_embeddings.word2vec import inputs
from tf_embeddings.word2vec import kernels
from tf_embeddings.word2vec.config import ROW_UPDATES
from tf_embeddings.word2vec.kernels import IN_GRAPH_SAMPLERS

# ROW_UPDATES, how a row that several examples of one step update moves
# (`kernels.row_scale`): "bounded" = the sum of its n per-example updates while
# lr * n <= 1, scaled down to 1 / (lr n) of it beyond; "sum" = the plain sum (the
# per-example rule without its sequential self-correction, which diverges when frequent
# words repeat in big batches).


# Bytes of one chunk of `fill_stateless_uniform`: its three temporaries stay in TensorFlow's
# allocator afterwards. Process RSS after building a 1M-word dim-300 model (tables 2.4 GB,
# imports 0.55 GB): 16 MB chunks 3.15 GB, 78 MB chunks 3.33 GB, the one-shot op 4.37 GB.
INIT_CHUNK_BYTES = 16 << 20


def fill_stateless_uniform(table, seed, minval, maxval, chunk_rows=None):
  """table[:] = tf.random.stateless_uniform(table.shape, seed, minval, maxval), by chunks.

  The same bits as the one-shot call, without its three full-table temporaries (the raw
  uniform, its product and its sum), which TensorFlow's CPU allocator keeps for the life of
  the process: a 1M x 300 table (1.2 GB) took the process from 0.55 GB to 4.2 GB.
  Philox gives 4 float32 per counter step, so rows [start, start + n) are the values of
  flat indices start * dim ... and start at counter + start * dim / 4 (chunk_rows is a
  multiple of 4, so every chunk starts on a counter step). Each chunk goes in with a
  scatter_update (a sliced assign copied the whole table once).

  Args:
    table: float32 tf.Variable [rows, dim].
    seed: the stateless seed, shape [2] ints.
    minval, maxval: the range of the values.
    chunk_rows: rows generated at a time, a positive multiple of 4; default about
      INIT_CHUNK_BYTES of them.
  """
  rows, dim = table.shape
  if chunk_rows is None:
    chunk_rows = max(4, INIT_CHUNK_BYTES // (4 * dim) // 4 * 4)
  if chunk_rows <= 0 or chunk_rows % 4:
    raise ValueError(f"chunk_rows must be a positive multiple of 4, got {chunk_rows}")
  key, counter = tf.raw_ops.StatelessRandomGetKeyCounter(seed=tf.constant(seed, tf.int64))
  alg = tf.raw_ops.StatelessRandomGetAlg()
  low, high = (int(x) for x in counter.numpy())
  for start in range(0, rows, chunk_rows):
    n = min(chunk_rows, rows - start)
    step = low + start * dim // 4                      # 128-bit counter: carry to `high`
    moved = tf.constant([step % (1 << 64), (high + (step >> 64)) % (1 << 64)], tf.uint64)
    rnd = tf.raw_ops.StatelessRandomUniformV2(shape=[n, dim], key=key, counter=moved, alg=alg,
                                              dtype=tf.float32)
    # As tf.random.stateless_uniform scales (the same ops, so the same bits).
    table.scatter_update(tf.IndexedSlices(rnd * (maxval - minval) + minval,
                                          tf.range(start, start + n)))


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Static shape and loss settings of the compiled train step.

  Attributes:
    model: "skipgram" (centre -> context) or "cbow" (mean of context -> centre).
    loss: "nce" (sigmoid cross-entropy, tf.nn.nce_loss) or "sampled_softmax".
    vocab_size: number of ids, UNK included.
    dim: embedding dimension.
    window: maximum window (CBOW inputs are [batch, 2 * window]).
    batch_size: centres per minibatch, given as runs of consecutive centres with their
      text (kernels.skipgram_window_sgd, kernels.cbow_window_sgd).
    steps_per_call: minibatches per compiled call.
    num_sampled: negatives drawn per group.
    group_size: examples sharing one draw of negatives; divides batch_size.
    sampler: one of losses.samplers.SAMPLERS.
    distortion: exponent of the unigram sampler.
    subtract_log_q: subtract log(expected count) from the logits (textbook NCE and sampled
      softmax, as tf.nn does). False gives Mikolov's negative sampling.
    remove_accidental_hits: drop a sampled id equal to the example's target.
    train_biases: learn the output biases (else they stay 0, as in word2vec.c).
    row_update: how a table row that several rows of one step's scatter update is moved
      (`ROW_UPDATES`): "bounded" (default) by their sum, scaled down to 1 / (lr n) of it
      when lr n > 1 (kernels.row_scale); "sum" by their sum (word2vec.c's per-example rule
      applied at once, which diverges when frequent words repeat many times in a minibatch).
  """
  model: str
  loss: str
  vocab_size: int
  dim: int
  window: int
  batch_size: int
  steps_per_call: int
  num_sampled: int
  group_size: int
  sampler: str = "unigram"
  distortion: float = 0.75
  subtract_log_q: bool = False
  remove_accidental_hits: bool = True
  train_biases: bool = False
  row_update: str = "bounded"

  @property
  def num_groups(self):
    return self.batch_size // self.group_size

  @property
  def negative_groups(self):
    """Draws of num_sampled negatives per minibatch: one per group of centres (CBOW), one
    per group of centres and context offset (skip-gram)."""
    if self.model == "skipgram":
      return self.num_groups * 2 * self.window
    return self.num_groups


class Word2Vec(tf.Module):
  """The three word2vec tables and the compiled training call."""

  def __init__(self, config, unigram_counts=None, seed=0, tables=None, table_scope=None,
               layout=None):
    """Creates the variables.

    Args:
      config: StepConfig.
      unigram_counts: int array [vocab_size] of counts (needed by the unigram sampler);
        UNK's count is ignored (it is never a target nor a negative).
      seed: int, seeds the initialisation and the sampler.
      tables: optional {name: tensor} of the TABLES (`read_tables`): the variables start
        from these tensors (their buffers, no copy) instead of the initialisation.
      table_scope: optional context manager the three tables are created in (a
        parameter-server strategy's `Distribution.tables`: ShardedVariables; they are then
        trained with `train_block_on_rows`).
      layout: where each id's row is in the tables (`distribute.RowLayout`; default
        row = id). A parameter-server run spreads the frequent words over the shards;
        `train_block_on_rows`, `hidden` and the evaluation read and write through it.
    """
    super().__init__(name="word2vec")
    c = config
    if c.batch_size % c.group_size:
      raise ValueError("group_size must divide batch_size")
    if c.row_update not in ROW_UPDATES:
      raise ValueError(f"row_update must be one of {ROW_UPDATES}")
    self.config = c
    self.seed = seed
    self.layout = layout or RowLayout(c.vocab_size)
    if self.layout.size != c.vocab_size:
      raise ValueError(f"a layout of {self.layout.size} rows for {c.vocab_size} ids")
    half = 0.5 / c.dim
    shapes = {"input_embeddings": [c.vocab_size, c.dim],
              "output_embeddings": [c.vocab_size, c.dim], "output_biases": [c.vocab_size]}
    if tables is not None:
      for name, shape in shapes.items():
        if tables[name].shape.as_list() != shape:
          raise ValueError(f"{name} has shape {tables[name].shape.as_list()}, the model "
                           f"{shape}")
    # Zeros made shard by shard on their servers when the tables are sharded (row_initial).
    initial = tables or {name: row_initial(shape) for name, shape in shapes.items()}
    with table_scope() if table_scope else contextlib.nullcontext():
      # Input vectors, the exported embeddings: [vocab_size, dim].
      self.input_embeddings = tf.Variable(initial["input_embeddings"],
                                          shape=shapes["input_embeddings"], dtype=tf.float32,
                                          name="input_embeddings")
      # Output vectors of NCE / sampled softmax: [vocab_size, dim].
      self.output_embeddings = tf.Variable(initial["output_embeddings"],
                                           shape=shapes["output_embeddings"],
                                           dtype=tf.float32, name="output_embeddings")
      # Output biases: [vocab_size].
      self.output_biases = tf.Variable(initial["output_biases"],
                                       shape=shapes["output_biases"], dtype=tf.float32,
                                       name="output_biases")
    # The variables must hold the only references to their buffers before the first
    # scatter, which otherwise copies the whole table (copy on write): +1.2 GB RSS for a
    # 1M x 300 table when the fill below ran while `initial` still held its zeros.
    restored = tables is not None
    del initial, tables
    if not restored:
      fill_stateless_uniform(self.input_embeddings, [seed, 1], -half, half)
    self._row_counts = None
    if c.row_update == "bounded":
      # Scratch counts of `kernels.row_scale`: all zero between steps, never checkpointed.
      self._row_counts = tf.Variable(tf.zeros([c.vocab_size]), trainable=False,
                                     name="row_counts")
    if unigram_counts is not None:
      counts = np.asarray(unigram_counts, np.float64).copy()
      counts[0] = 0.0
      # A numpy array: a list on a tf.Module is wrapped and tracked element by element
      # (1M words: 10-26 s of the set-up).
      self._unigrams = counts
    else:
      self._unigrams = None
    if c.sampler == "unigram" and self._unigrams is None:
      raise ValueError("the unigram sampler needs unigram_counts")
    self._compiled_block = tf.function(self._block, jit_compile=True, autograph=False)
    if c.sampler in IN_GRAPH_SAMPLERS:
      # Fixed distributions are sampled inside the compiled block (`kernels.draw`).
      self._sampler = kernels.sampler_tables(c, self._unigrams)
      self._compiled_train = tf.function(self._sample_and_block, jit_compile=True,
                                         autograph=False)
      # The parameter-server path (`train_block_on_rows`): the draws, and the block on
      # gathered rows, compiled apart (between them the rows are gathered).
      self._compiled_draw = tf.function(self._draw, jit_compile=True, autograph=False)
      self._compiled_rows = tf.function(
          functools.partial(kernels.block_on_rows, c), jit_compile=True, autograph=False)
    else:
      # learned_unigram keeps state in its op kernel: it runs outside XLA, in one graph so
      # that its kernel is built once.
      self._sample_fn = tf.function(self._sample_with_op, autograph=False)
      self._outside = tf.function(self._train_block_outside, autograph=False)

  @property
  def tables(self):
    """The kernels' view of the variables (kernels.Tables)."""
    return kernels.Tables(self.input_embeddings, self.output_embeddings, self.output_biases,
                          self._row_counts)

  # ---- sampling ----

  def sample(self, targets, step=0):
    """Draws negatives for every group of a block.

    Args:
      targets: int32 [steps_per_call, batch_size] target ids; for skip-gram runs, the
        context id of every (centre, offset) slot, [steps_per_call, batch_size, 2 * window]
        (`slot_contexts`).
      step: int, the global step of the block's first minibatch; with the model's seed it
        determines the draws of the fixed-distribution samplers (a resumed run draws what
        the uninterrupted one would have).

    Returns:
      sampled: int32 [steps_per_call, negative_groups, num_sampled].
      true_log_q: float32, the shape of targets: log of the expected count of the target
        among a group's draws (0 when subtract_log_q is off).
      sampled_log_q: float32 [steps_per_call, negative_groups, num_sampled], likewise.
    """
    if self.config.sampler in IN_GRAPH_SAMPLERS:
      return kernels.draw(self.config, self._sampler, self.seed,
                          tf.convert_to_tensor(targets), tf.constant(step, tf.int64))
    return self._sample_fn(targets)

  def _sample_with_op(self, targets):
    return kernels.sample_with_op(self.config, self._unigrams, self.seed, targets)

  # ---- the forward pass and the loss head (kernels.hidden, kernels.head) ----

  def head(self, hidden, targets, sampled, true_log_q, sampled_log_q, weights=None,
           with_counts=False):
    """Loss and gradients of NCE / sampled softmax for one minibatch: `kernels.head`."""
    return kernels.head(self.config, self.tables, hidden, targets, sampled, true_log_q,
                        sampled_log_q, weights=weights, with_counts=with_counts)

  def hidden(self, inputs, lengths=None):
    """Input vector of each example, float32 [batch, dim]: `kernels.hidden`.

    Args:
      inputs: int32 [batch] (skip-gram) or [batch, 2 * window] (CBOW, padded).
      lengths: int32 [batch] number of real context ids (CBOW only).
    """
    return kernels.hidden(self.config, self.tables, self.layout.rows(inputs), lengths)

  def slot_contexts(self, inputs):
    """int32 [steps, batch_size, 2w], the context id of every (centre, offset) slot of a
    block of skip-gram runs: `kernels.slot_contexts`."""
    return kernels.slot_contexts(self.config, inputs)

  # ---- the block of SGD steps ----

  def _block(self, inputs, lengths, targets, sampled, true_log_q, sampled_log_q, lrs,
             window=None):
    """steps_per_call minibatches in one loop (`kernels.block`); returns their mean loss."""
    return kernels.block(self.config, self.tables, inputs, lengths, targets, sampled,
                         true_log_q, sampled_log_q, lrs, window)

  def _sample_targets(self, inputs, targets):
    return kernels.sample_targets(self.config, inputs, targets)

  def _sample_and_block(self, inputs, lengths, targets, lrs, step, window=None):
    sampled, true_log_q, sampled_log_q = kernels.draw(
        self.config, self._sampler, self.seed, self._sample_targets(inputs, targets), step)
    return self._block(inputs, lengths, targets, sampled, true_log_q, sampled_log_q, lrs,
                       window)

  def _train_block_outside(self, inputs, lengths, targets, lrs, window=None):
    sampled, true_log_q, sampled_log_q = self._sample_with_op(
        self._sample_targets(inputs, targets))
    return self._compiled_block(inputs, lengths, targets, sampled, true_log_q,
                                sampled_log_q, lrs, window)

  def _draw(self, inputs, targets, step):
    return kernels.draw(self.config, self._sampler, self.seed,
                        self._sample_targets(inputs, targets), step)

  def train_block_on_rows(self, inputs, lengths, targets, lrs, step, window=None, upto=None):
    """`train_block` for tables that live elsewhere (ShardedVariables on parameter
    servers): reads the rows the block touches, runs the compiled block on them
    (`kernels.block_on_rows`) and adds their change back to the tables (asynchronous
    SGD: another worker's change to the same rows in the meantime is kept, Hogwild).

    The same updates as `train_block` on the same tables (up to float rounding): the
    same draws, the same kernels. Traced inside the function a worker runs (a
    `jit_compile=True` function cannot be scheduled on a worker; one it calls can), with
    the args of `train_block` as tensors: step an int64 scalar, window a Python int.

    upto: None, or "gather" / "compute" to stop after reading the rows / after the
      compiled block, changing nothing (benchmarks/word2vec_cluster_steps.py times the
      phases so); the returned scalar then only depends on what ran.

    Returns:
      Scalar float32, mean per-example training loss of the block.
    """
    c = self.config
    if c.sampler not in IN_GRAPH_SAMPLERS:
      raise ValueError(f"train_block_on_rows draws in the graph: not with --sampler={c.sampler}")
    sampled, true_log_q, sampled_log_q = self._compiled_draw(inputs, targets, step)
    # Every id of the block, 0 first so that it stays 0 ("no word") once remapped.
    parts = [tf.zeros([1], tf.int32), inputs, targets, sampled]
    unique, local = tf.unique(tf.concat([tf.reshape(p, [-1]) for p in parts], 0))
    sizes = [int(np.prod(p.shape)) for p in parts]
    _, local_inputs, local_targets, local_sampled = (
        tf.reshape(x, p.shape) for x, p in zip(tf.split(local, sizes), parts))
    # A fixed number of rows (one compiled program): the rows of the unique ids, padded
    # with zero rows here (no local id points at them), so that only the block's own
    # rows cross the network (padding with row 0's id fetched copies of it from shard 0).
    capacity = kernels.rows_per_block(c, inputs.shape[1])
    count = tf.size(unique)
    tables = (self.input_embeddings, self.output_embeddings, self.output_biases)
    at = self.layout.rows(unique)  # where the ids' rows are in the tables
    before = []
    for table in tables:
      rows = gather_rows(table, at)
      padding = [[0, capacity - count]] + [[0, 0]] * (len(table.shape) - 1)
      before.append(tf.ensure_shape(tf.pad(rows, padding), [capacity, *table.shape[1:]]))
    if upto == "gather":
      return tf.add_n([tf.reduce_sum(b) for b in before])
    loss, after = self._compiled_rows(before, local_inputs, lengths, local_targets,
                                      local_sampled, true_log_q, sampled_log_q, lrs, window)
    if upto == "compute":
      return loss + tf.add_n([tf.reduce_sum(a) for a in after])
    for table, old, new in zip(tables[:3 if c.train_biases else 2], before, after):
      table.scatter_add(tf.IndexedSlices((new - old)[:count], at))
    return loss

  def block_window(self, lengths):
    """The compiled program a block runs: for skip-gram runs its largest reduced window (one
    program per window; the pipeline draws one per block), else None (one program)."""
    return kernels.block_window(self.config, lengths)

  def train_block(self, inputs, lengths, targets, lrs, step=0):
    """Samples negatives and runs one compiled block of SGD steps.

    Args:
      inputs: int32 [steps, R * (batch / R + 2 * window)] runs of text (see
        `kernels.skipgram_window_sgd`, `kernels.cbow_window_sgd`).
      lengths: int32 [steps, batch] the centres' reduced windows.
      targets: int32 [steps, batch] the centres.
      lrs: float32 [steps] learning rate of each minibatch.
      step: int, global step of the block's first minibatch (seeds the negatives).

    Returns:
      Scalar float32, mean per-example training loss of the block.
    """
    c = self.config
    window = self.block_window(lengths)
    if c.sampler in IN_GRAPH_SAMPLERS:
      return self._compiled_train(inputs, lengths, targets, lrs, tf.constant(step, tf.int64),
                                  window)
    return self._outside(inputs, lengths, targets, lrs, window)


# ---- building, checkpointing and restoring the model of a run ----

def step_config(config, vocab_size):
  """The StepConfig of a run's (resolved) Config over a vocabulary of vocab_size ids.

  The group is config.group_size, which the flags require to divide the batch; a run
  recorded before they did trained with the largest divisor of the batch below it.
  """
  batch = config.batch_size
  group = min(config.group_size, batch)
  while batch % group:
    group -= 1
  return StepConfig(
      model=config.model, loss=config.loss, vocab_size=vocab_size,
      dim=config.embedding_dim, window=config.window, batch_size=batch,
      steps_per_call=config.steps_per_call, num_sampled=config.num_sampled,
      group_size=group, sampler=config.sampler, distortion=config.distortion,
      subtract_log_q=config.subtract_log_q,
      remove_accidental_hits=config.remove_accidental_hits,
      train_biases=config.train_biases, row_update=config.row_update)


def build_model(config, vocab, checkpoint=None, table_scope=None, layout=None):
  """A new Word2Vec of the run's Config over its Vocabulary (UserError if too small), its
  tables read from `checkpoint` (a path, in id order) if given; table_scope and layout as
  for `Word2Vec`."""
  if config.num_sampled >= len(vocab) - 1:
    raise UserError(f"the vocabulary has {len(vocab) - 1} words besides UNK, not more than "
                    f"--num_sampled={config.num_sampled}: lower --num_sampled or "
                    "--min_count, or use a bigger corpus")
  return Word2Vec(step_config(config, len(vocab)), unigram_counts=vocab.counts,
                  seed=config.seed, tables=read_tables(checkpoint) if checkpoint else None,
                  table_scope=table_scope, layout=layout)


# The checkpointed tables (`make_checkpoint`), by attribute name.
TABLES = ("input_embeddings", "output_embeddings", "output_biases")


def checkpoint_key(name):
  """The key of table `name` (one of TABLES) in a `make_checkpoint` checkpoint."""
  return f"{name}/.ATTRIBUTES/VARIABLE_VALUE"


# The layout's multiplier in a `make_checkpoint` checkpoint (absent before 2026-12-02's
# fifth session: row = id).
LAYOUT_KEY = "table_layout/.ATTRIBUTES/VARIABLE_VALUE"


def checkpoint_layout(checkpoint, vocab_size):
  """The RowLayout the tables of `checkpoint` (a path) were written in."""
  reader = tf.train.load_checkpoint(checkpoint)
  multiplier = int(reader.get_tensor(LAYOUT_KEY)) if reader.has_tensor(LAYOUT_KEY) else 1
  return RowLayout(vocab_size, multiplier)


def read_tables(checkpoint, names=TABLES):
  """{name: tensor} of the tables in `checkpoint` (a path), read from disk into tensors,
  in id order (a spread layout's rows are put back in id order: one more copy of a table
  at a time while that happens).

  A model built from them (`Word2Vec(tables=...)`) holds one copy of each table. Building
  the model first and restoring into it held two: restoring assigns new buffers and
  TensorFlow's CPU allocator keeps the old ones (a 1M-word dim-300 run: 6.8 GB of RSS to
  evaluate 2.4 GB of tables).
  """
  keys = [checkpoint_key(name) for name in names]
  values = tf.raw_ops.RestoreV2(prefix=checkpoint, tensor_names=keys,
                                shape_and_slices=[""] * len(keys),
                                dtypes=[tf.float32] * len(keys))
  tables = dict(zip(names, values))
  del values
  layout = checkpoint_layout(checkpoint, tables[names[0]].shape[0])
  for name in names:
    tables[name] = layout.to_ids(tables[name])
  return tables


def make_checkpoint(model):
  """(tf.train.Checkpoint of the model's tables, their layout's multiplier and the run's
  position, {name: position variable}): epoch, next_chunk (the first chunk of the epoch not
  trained yet), step. (The layout is read before building the model: `checkpoint_layout`.)"""
  state = {
      "epoch": tf.Variable(0, dtype=tf.int64, name="epoch"),
      "next_chunk": tf.Variable(0, dtype=tf.int64, name="next_chunk"),
      "step": tf.Variable(0, dtype=tf.int64, name="step"),
  }
  ckpt = tf.train.Checkpoint(input_embeddings=model.input_embeddings,
                             output_embeddings=model.output_embeddings,
                             output_biases=model.output_biases,
                             table_layout=tf.Variable(model.layout.multiplier, dtype=tf.int64,
                                                      trainable=False, name="table_layout"),
                             **state)
  return ckpt, state


def saved_run(model_dir):
  """(saved Config, Vocabulary, path of the last checkpoint) of the run in model_dir.

  Built from the run's config.json and vocab.tsv; nothing reads the corpus.
  """
  rundir = config_lib.run_dir(model_dir)
  saved = rundir.load_config(
      what="word2vec run", hint="train one first with `word2vec train --model_dir=...`")
  vocab = inputs.load_vocab(model_dir)
  latest = rundir.latest_checkpoint()  # this --model_dir, not the one of config.json
  if not latest:
    raise UserError(f"--model_dir={model_dir} has no checkpoint yet: train it first "
                    "(or let the running training write its first checkpoint)")
  return saved, vocab, latest


def restore(model_dir):
  """Loads the last checkpoint of a run for eval/export, from its saved state only.

  Returns:
    (saved Config, Vocabulary, Word2Vec).
  """
  saved, vocab, latest = saved_run(model_dir)
  model = Word2Vec(step_config(saved, len(vocab)), unigram_counts=vocab.counts,
                   seed=saved.seed, tables=read_tables(latest))
  return saved, vocab, model
