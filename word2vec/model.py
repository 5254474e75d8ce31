"""Skip-gram and CBOW with NCE or sampled softmax, and their fused sparse SGD step.

The variables are word2vec's: input vectors (the embeddings we export), output vectors and
output biases, initialised as word2vec.c does (inputs uniform in +-0.5/dim, outputs zero).

Why a fused step and not `GradientTape` over `tf.nn.nce_loss`: measured on this 2-core machine,
the tape over `tf.nn.nce_loss` with plain sparse SGD runs at about 0.4M pairs/s and diverges
at large batches, because every example of the batch shares the same sampled rows and their
summed gradients overshoot. The fused step computes exactly the logits of
`tf.nn.nce_loss` / `tf.nn.sampled_softmax_loss` (true logit w.x + b - log Q, sampled logits
likewise, accidental hits removed) and applies the hand-derived gradients with word2vec's
per-example SGD, but it draws a separate set of `num_sampled` negatives for each *group* of
`group_size` examples instead of one set for the whole batch. With groups of 64 examples the
sampled rows get few summed contributions (word2vec's behaviour, so word2vec's learning rate
works), while the [group, num_sampled] logit blocks are still matrix products. Several
minibatches run in one XLA-compiled `tf.while_loop` to remove per-step dispatch overhead,
and the negatives of the fixed-distribution samplers are drawn inside it too (an inverse-CDF
binary search; the tf candidate-sampler op outside XLA took about a fifth of the step time).
Training reads runs of consecutive centres with their text (`_skipgram_window_sgd`,
`_cbow_window_sgd`), so that each table row of a run position is read and written once and
the updates are summed per text position before one scatter; the example layout (`_sgd`:
skip-gram pairs, CBOW padded contexts) is the reference the run steps are tested against.
`tests/test_word2vec_model.py` checks loss and gradients against `tf.nn.nce_loss` and
`tf.nn.sampled_softmax_loss` under `GradientTape`, the skip-gram run step against them pair
by pair, and the CBOW run step against the example layout.
"""
import dataclasses
import functools

import numpy as np
import tensorflow as tf

from tf_embeddings.losses import samplers as samplers_lib
from tf_embeddings.word2vec.config import ROW_UPDATES

# Samplers with a fixed distribution, drawn inside the compiled block; learned_unigram is
# stateful and uses the tf op outside XLA.
IN_GRAPH_SAMPLERS = ("log_uniform", "unigram", "uniform")
# ROW_UPDATES, how a row that several examples of one step update moves
# (`Word2Vec._row_scale`): "bounded" = the sum of its n per-example updates while
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
    batch_size: examples per minibatch.
    steps_per_call: minibatches per compiled call.
    num_sampled: negatives drawn per group.
    group_size: examples sharing one draw of negatives; divides batch_size.
    sampler: one of losses.samplers.SAMPLERS.
    distortion: exponent of the unigram sampler.
    subtract_log_q: subtract log(expected count) from the logits (textbook NCE and sampled
      softmax, as tf.nn does). False gives Mikolov's negative sampling.
    remove_accidental_hits: drop a sampled id equal to the example's target.
    train_biases: learn the output biases (else they stay 0, as in word2vec.c).
    layout: "examples" (a minibatch is batch_size padded examples: skip-gram pairs, CBOW
      contexts) or "runs" (batch_size centres given as runs of consecutive centres with
      their text, what training uses: `_skipgram_window_sgd`, `_cbow_window_sgd`).
    row_update: how a table row that several rows of one step's scatter update is moved
      (`ROW_UPDATES`): "bounded" (default) by their sum, scaled down to 1 / (lr n) of it
      when lr n > 1 (`_row_scale`); "sum" by their sum (word2vec.c's per-example rule
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
  layout: str = "examples"
  row_update: str = "bounded"

  @property
  def num_groups(self):
    return self.batch_size // self.group_size

  @property
  def negative_groups(self):
    """Draws of num_sampled negatives per minibatch: one per group of examples, and for
    skip-gram runs one per group of centres and context offset."""
    if self.model == "skipgram" and self.layout == "runs":
      return self.num_groups * 2 * self.window
    return self.num_groups


def _loss_and_logit_grads(loss, true_logit, samp_logit, keep):
  """Per-example loss and its gradients w.r.t. the logits, for either loss.

  Args:
    loss: "nce" (sigmoid cross-entropy of the true column and of each sampled one) or
      "sampled_softmax" (softmax cross-entropy over [true, sampled...]).
    true_logit: float32 [...], the true column (log Q already subtracted).
    samp_logit: float32 [..., k], the sampled columns.
    keep: float32 [..., k], 0 for a removed accidental hit (no loss, probability 0).

  Returns:
    (loss [...], d_true [...], d_samp [..., k]).
  """
  if loss == "nce":
    return (tf.math.softplus(-true_logit)
            + tf.reduce_sum(tf.math.softplus(samp_logit) * keep, -1),
            tf.sigmoid(true_logit) - 1.0, tf.sigmoid(samp_logit) * keep)
  masked = samp_logit + (keep - 1.0) * 1e30
  lse = tf.reduce_logsumexp(tf.concat([true_logit[..., None], masked], -1), axis=-1)
  return lse - true_logit, tf.exp(true_logit - lse) - 1.0, tf.exp(masked - lse[..., None])


def _to_groups(x, groups, inverse=False):
  """Reorders the rows of x so that row k * groups + j goes to group j (inverse: back).

  The groups of examples sharing negatives are strided, i.e. spread over the runs of a
  minibatch: neighbouring centres have nearly equal vectors and their negative updates
  would add up.
  """
  shape = x.shape.as_list()
  split = [groups, shape[0] // groups] if inverse else [shape[0] // groups, groups]
  y = tf.reshape(x, split + shape[1:])
  y = tf.transpose(y, [1, 0] + list(range(2, len(shape) + 1)))
  return tf.reshape(y, shape)


class Word2Vec(tf.Module):
  """The three word2vec tables and the compiled training call."""

  def __init__(self, config, unigram_counts=None, seed=0):
    """Creates the variables.

    Args:
      config: StepConfig.
      unigram_counts: int array [vocab_size] of counts (needed by the unigram sampler);
        UNK's count is ignored (it is never a target nor a negative).
      seed: int, seeds the initialisation and the sampler.
    """
    super().__init__(name="word2vec")
    c = config
    if c.batch_size % c.group_size:
      raise ValueError("group_size must divide batch_size")
    if c.row_update not in ROW_UPDATES:
      raise ValueError(f"row_update must be one of {ROW_UPDATES}")
    self.config = c
    self.seed = seed
    half = 0.5 / c.dim
    # Input vectors, the exported embeddings: [vocab_size, dim].
    self.input_embeddings = tf.Variable(tf.zeros([c.vocab_size, c.dim]),
                                        name="input_embeddings")
    fill_stateless_uniform(self.input_embeddings, [seed, 1], -half, half)
    # Output vectors of NCE / sampled softmax: [vocab_size, dim].
    self.output_embeddings = tf.Variable(tf.zeros([c.vocab_size, c.dim]),
                                         name="output_embeddings")
    # Output biases: [vocab_size].
    self.output_biases = tf.Variable(tf.zeros([c.vocab_size]), name="output_biases")
    if c.row_update == "bounded":
      # Scratch counts of `_row_scale`: all zero between steps, never checkpointed.
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
      # Fixed distributions are sampled inside the compiled block (see `_draw`).
      probs = samplers_lib.sampler_probabilities(c.sampler, c.vocab_size,
                                                 unigrams=self._unigrams,
                                                 distortion=c.distortion)
      # Integer cumulative weights (total 2^52, exact in int64 and float64): a draw is the
      # first id whose cumulative weight exceeds a uniform integer in [0, total).
      weights = np.round(probs * float(1 << 52)).astype(np.int64)
      self._cumulative = tf.constant(np.cumsum(weights), tf.int64)
      self._total = int(weights.sum())
      with np.errstate(divide="ignore"):
        self._log_p = tf.constant(np.maximum(np.log(probs), -1e4), tf.float32)
      self._search_steps = max(1, int(np.ceil(np.log2(c.vocab_size))))
      self._compiled_train = tf.function(self._sample_and_block, jit_compile=True,
                                         autograph=False)
    else:
      # learned_unigram keeps state in its op kernel: it runs outside XLA, in one graph so
      # that its kernel is built once.
      self._sample_fn = tf.function(self._sample_with_op, autograph=False)
      self._outside = tf.function(self._train_block_outside, autograph=False)

  # ---- sampling (outside XLA: the tf candidate samplers are CPU kernels) ----

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
      return self._draw(tf.convert_to_tensor(targets), tf.constant(step, tf.int64))
    return self._sample_fn(targets)

  def _draw(self, targets, step):
    """In-graph (XLA-compilable) sampling from the fixed distribution P of the sampler.

    Each group draws num_sampled ids with replacement, so the expected count of id j among a
    group's draws is num_sampled * P(j), the `unique=False` expected count of
    tf.random.*_candidate_sampler for num_sampled tries. The draw is an inverse-CDF lookup:
    a binary search over the integer cumulative weights, ceil(log2(vocab_size)) gathers.
    """
    c = self.config
    shape = [c.steps_per_call, c.negative_groups, c.num_sampled]
    seed = tf.stack([tf.constant(self.seed, tf.int64), step])
    x = tf.random.stateless_uniform(shape, seed, minval=0, maxval=self._total,
                                    dtype=tf.int64)
    lo = tf.zeros(shape, tf.int64)
    hi = tf.fill(shape, tf.constant(c.vocab_size - 1, tf.int64))
    for _ in range(self._search_steps):
      mid = (lo + hi) // 2
      above = tf.gather(self._cumulative, mid) > x
      hi = tf.where(above, mid, hi)
      lo = tf.where(above, lo, mid + 1)
    sampled = tf.cast(lo, tf.int32)
    if not c.subtract_log_q:
      return (sampled, tf.zeros(tf.shape(targets), tf.float32), tf.zeros(shape, tf.float32))
    log_k = float(np.log(c.num_sampled))
    return (sampled, tf.gather(self._log_p, targets) + log_k,
            tf.gather(self._log_p, sampled) + log_k)

  def _sample_with_op(self, targets):
    """Sampling with the tf candidate-sampler op (for learned_unigram)."""
    c = self.config
    total = c.steps_per_call * c.negative_groups * c.num_sampled
    true_classes = tf.reshape(tf.cast(targets, tf.int64), [-1, 1])
    sampled, true_count, sampled_count = samplers_lib.sample_candidates(
        c.sampler, true_classes, 1, total, c.vocab_size, unique=False,
        unigrams=self._unigrams, distortion=c.distortion, seed=self.seed)
    shape = [c.steps_per_call, c.negative_groups, c.num_sampled]
    sampled = tf.reshape(tf.cast(sampled, tf.int32), shape)
    if not c.subtract_log_q:
      return (sampled, tf.zeros(tf.shape(targets), tf.float32), tf.zeros(shape, tf.float32))
    # With unique=False the sampler's expected counts are total * P; a group draws
    # num_sampled, so its expected count is num_sampled * P.
    per_group = c.num_sampled / total
    true_log_q = tf.math.log(tf.reshape(true_count, tf.shape(targets)) * per_group)
    sampled_log_q = tf.math.log(tf.reshape(sampled_count, shape) * per_group)
    return sampled, true_log_q, sampled_log_q

  # ---- the update rule ----

  def _row_scale(self, ids, lr, updates):
    """Factor of each scatter row under `row_update` "bounded": min(1, 1 / (lr n)).

    n is the number of per-example updates that the row's id receives in this step, summed
    over every scatter row with that id: one per skip-gram pair it is the centre or the
    context of, one per CBOW example it is a context word or the target of, and sqrt(m) for
    a draw of negatives that m examples of a group use: their hidden vectors come from
    different runs of text, so the norm of their summed update grows as sqrt(m). (Counting
    a draw once let skip-gram diverge at --batch_size=4096; counting it m times damped every
    negative and cost CBOW 2.3 analogy points.) While lr * n <= 1 the row moves by the
    sum of its updates, word2vec's per-example SGD applied at once; beyond, by 1 / lr
    times their (n-weighted) mean: a row's step no longer grows with how often its word
    repeats in a minibatch. Sequential per-example SGD limits itself (each update shrinks
    the next one's gradient); their sum at once does not, which is what diverged. (Still
    seen: skip-gram at twice its default rate, 1024 centres, diverged: README.)

    The per-id sums are O(len(ids)): a scratch vector is scatter-added, read back and reset
    to zero at those ids (a [vocab] segment sum would cost O(vocab) per step).

    Args:
      ids: int32 [n], the rows of one scatter.
      lr: scalar learning rate of the step.
      updates: float32 [n], the number of per-example updates each scatter row holds.

    Returns:
      float32 [n] factors in (0, 1], or None for "sum".
    """
    if self.config.row_update == "sum":
      return None
    self._row_counts.scatter_add(tf.IndexedSlices(updates, ids))
    total = tf.gather(self._row_counts, ids)
    self._row_counts.scatter_update(tf.IndexedSlices(tf.zeros_like(updates), ids))
    return 1.0 / tf.maximum(lr * total, 1.0)

  def _apply(self, table, ids, updates, scale):
    """table[ids] -= updates (rows summed), each row first multiplied by scale (if any)."""
    if scale is not None:
      updates *= scale if updates.shape.rank == 1 else scale[:, None]
    table.scatter_sub(tf.IndexedSlices(updates, ids))

  # ---- the loss head: logits and their gradients for one minibatch ----

  def head(self, hidden, targets, sampled, true_log_q, sampled_log_q, weights=None,
           with_counts=False):
    """Loss and gradients of NCE / sampled softmax for one minibatch.

    Args:
      hidden: float32 [batch, dim], the input vector of each example.
      targets: int32 [batch].
      sampled: int32 [num_groups, num_sampled].
      true_log_q: float32 [batch].
      sampled_log_q: float32 [num_groups, num_sampled].
      weights: optional float32 [batch] per-example weights (0 = not an example: no loss,
        no gradient).

    Returns:
      loss: float32 [batch], per-example loss (sum over the true and sampled columns).
      d_hidden: float32 [batch, dim], dloss/dhidden.
      out_ids: int32 [batch + num_groups * num_sampled], rows of the output tables touched.
      d_out: float32 [batch + num_groups * num_sampled, dim], dloss/doutput rows.
      d_bias: float32 [batch + num_groups * num_sampled], dloss/dbias.
      With with_counts, also the per-example update counts of `_row_scale`:
      n_hidden: float32 [batch], 1 per real example (its input vector's update);
      n_out: float32 [batch + num_groups * num_sampled], for the rows of out_ids: 1 per
        real example's target, sqrt(examples of the group that keep it) per drawn row.
    """
    c = self.config
    groups, dim = c.num_groups, c.dim
    w_true = tf.gather(self.output_embeddings, targets)            # [B, d]
    w_samp = tf.gather(self.output_embeddings, sampled)            # [G, k, d]
    true_logit = tf.reduce_sum(hidden * w_true, 1) - true_log_q    # [B]
    hidden_g = tf.reshape(hidden, [groups, -1, dim])               # [G, g, d]
    samp_logit = tf.einsum("ngd,nkd->ngk", hidden_g, w_samp)       # [G, g, k]
    samp_logit -= sampled_log_q[:, None, :]
    if c.train_biases:
      true_logit += tf.gather(self.output_biases, targets)
      samp_logit += tf.gather(self.output_biases, sampled)[:, None, :]
    if c.remove_accidental_hits:
      hit = tf.equal(tf.reshape(targets, [groups, -1, 1]), sampled[:, None, :])
      keep = 1.0 - tf.cast(hit, tf.float32)                        # [G, g, k]
    else:
      keep = tf.ones_like(samp_logit)
    loss, d_true, d_samp = _loss_and_logit_grads(
        c.loss, tf.reshape(true_logit, [groups, -1]), samp_logit, keep)
    loss, d_true = tf.reshape(loss, [-1]), tf.reshape(d_true, [-1])
    if weights is not None:
      loss *= weights
      d_true *= weights
      d_samp *= tf.reshape(weights, [groups, -1, 1])
    d_hidden = d_true[:, None] * w_true + tf.reshape(
        tf.einsum("ngk,nkd->ngd", d_samp, w_samp), [-1, dim])
    d_w_true = d_true[:, None] * hidden                            # [B, d]
    d_w_samp = tf.einsum("ngk,ngd->nkd", d_samp, hidden_g)         # [G, k, d]
    out_ids = tf.concat([targets, tf.reshape(sampled, [-1])], 0)
    d_out = tf.concat([d_w_true, tf.reshape(d_w_samp, [-1, dim])], 0)
    d_bias = tf.concat([d_true, tf.reshape(tf.reduce_sum(d_samp, 1), [-1])], 0)
    if not with_counts:
      return loss, d_hidden, out_ids, d_out, d_bias
    n_hidden = tf.ones_like(d_true) if weights is None else weights           # [B]
    # A drawn row sums the updates of the examples of its group that keep it (m): counted
    # as sqrt(m), the growth of the norm of a sum of m updates in unrelated directions.
    n_drawn = tf.sqrt(tf.reduce_sum(keep * tf.reshape(n_hidden, [groups, -1, 1]), 1))
    n_out = tf.concat([n_hidden, tf.reshape(n_drawn, [-1])], 0)
    return loss, d_hidden, out_ids, d_out, d_bias, (n_hidden, n_out)

  def hidden(self, inputs, lengths=None):
    """Input vector of each example: centre vector, or mean of the context vectors.

    Args:
      inputs: int32 [batch] (skip-gram) or [batch, 2 * window] (CBOW, padded).
      lengths: int32 [batch] number of real context ids (CBOW only).

    Returns:
      float32 [batch, dim].
    """
    if self.config.model == "skipgram":
      return tf.gather(self.input_embeddings, inputs)
    mask = tf.sequence_mask(lengths, tf.shape(inputs)[1], tf.float32)   # [B, 2w]
    vectors = tf.gather(self.input_embeddings, inputs)                  # [B, 2w, d]
    total = tf.reduce_sum(vectors * mask[:, :, None], 1)
    return total / tf.cast(lengths, tf.float32)[:, None]

  def _sgd(self, inputs, lengths, targets, sampled, true_log_q, sampled_log_q, lr):
    """One minibatch of word2vec's per-example SGD; returns the mean loss."""
    c = self.config
    h = self.hidden(inputs, lengths)
    loss, d_hidden, out_ids, d_out, d_bias, (n_hidden, n_out) = self.head(
        h, targets, sampled, true_log_q, sampled_log_q, with_counts=True)
    out_scale = self._row_scale(out_ids, lr, n_out)
    self._apply(self.output_embeddings, out_ids, lr * d_out, out_scale)
    if c.train_biases:
      self._apply(self.output_biases, out_ids, lr * d_bias, out_scale)
    if c.model == "skipgram":
      self._apply(self.input_embeddings, inputs, lr * d_hidden,
                  self._row_scale(inputs, lr, n_hidden))
    else:
      # word2vec.c (cbow_mean=1) adds the hidden gradient to every context word, undivided.
      mask = tf.sequence_mask(lengths, tf.shape(inputs)[1], tf.float32)
      updates = (lr * mask)[:, :, None] * d_hidden[:, None, :]           # [B, 2w, d]
      flat_ids = tf.reshape(inputs, [-1])
      self._apply(self.input_embeddings, flat_ids, tf.reshape(updates, [-1, c.dim]),
                  self._row_scale(flat_ids, lr, tf.reshape(mask, [-1])))
    return tf.reduce_mean(loss)

  def _run_shape(self, width):
    """(runs R, centres per run L) of a minibatch of runs whose text is `width` ids."""
    c = self.config
    runs = (width - c.batch_size) // (2 * c.window)
    return runs, c.batch_size // runs

  def _offsets(self):
    w = self.config.window
    return [o for o in range(-w, w + 1) if o]

  def slot_contexts(self, inputs):
    """The context id of every (centre, offset) slot of a block of skip-gram runs.

    Args:
      inputs: int32 [steps, R * (L + 2w)] runs of text (see `_skipgram_window_sgd`).

    Returns:
      int32 [steps, batch_size, 2w]: for centre i (run by run) and offset o in
      -w..-1, 1..w (in that order), the id o positions away; 0 where there is no word. The
      reduced windows are not applied (the step masks those slots).
    """
    c = self.config
    w = c.window
    steps = inputs.shape[0]
    runs, length = self._run_shape(inputs.shape[1])
    text = tf.reshape(inputs, [steps, runs, length + 2 * w])
    contexts = tf.stack([text[:, :, w + o:w + o + length] for o in self._offsets()], 3)
    return tf.reshape(contexts, [steps, c.batch_size, 2 * w])

  def _skipgram_window_sgd(self, r, ids, reduced, centres, sampled, true_log_q,
                           sampled_log_q, lr):
    """One skip-gram minibatch given as R runs of consecutive centres with their text.

    The layout is CBOW's (`_cbow_window_sgd`): run k holds L = batch_size / R consecutive
    centres and the L + 2w ids of text around them (0 = no word). Every centre has a slot
    per offset o in -r..-1, 1..r (r <= w, static: the block's largest reduced window);
    the slot is a (centre, context) pair of word2vec when |o| <= the centre's reduced
    window and both words exist, else it has weight 0. The tables are read and written once
    per run position instead of once per pair: the centres' input vectors (L rows per run)
    and the output vectors of the text (L + 2w rows), the context updates summed per text
    position before one scatter: for 5-word windows about 6x fewer rows than pairs.

    Negatives: centre i (run by run) is in group i mod G (G = num_groups, strided as in
    CBOW) and its slot at offset o draws from the group's own num_sampled negatives for
    that offset, so the pairs of one centre never share negatives (sharing them lost 2.4
    analogy points), while a draw is shared by group_size pairs as in the example layout.
    All the negatives of a group (2r * num_sampled) meet its centres in one matrix product.

    Args:
      ids: int32 [R * (L + 2w)] the R windows of text, one after the other.
      reduced: int32 [batch] reduced window of each centre (1..r), run by run.
      centres: int32 [batch] the centres, run by run (the middle of each window).
      sampled: int32 [G * 2w, num_sampled], group-major then offset -w..-1, 1..w
        (`negative_groups`); the step uses the offsets within r.
      true_log_q: float32 [batch, 2w] for each slot (`slot_contexts` order).
      sampled_log_q: float32 [G * 2w, num_sampled].
      lr: scalar learning rate.
      r: (first argument) static window of the step, at least every centre's reduced
        window; one compiled block per value (an XLA conditional over the value copied the
        tables: 0.91M pairs/s instead of 2.3M).

    Returns:
      Scalar, the mean loss over the real pairs.
    """
    c = self.config
    w, batch, dim, k = c.window, c.batch_size, c.dim, c.num_sampled
    runs, length = self._run_shape(ids.shape[0])
    # Only the slots within r of their centre: the columns w - r .. w + r - 1 of the
    # [-w..-1, 1..w] offset order, in the draws as in the slots.
    offsets = [o for o in range(-r, r + 1) if o]
    true_log_q = tf.reshape(true_log_q, [batch, 2 * w])[:, w - r:w + r]
    sampled = tf.reshape(sampled, [c.num_groups, 2 * w, k])[:, w - r:w + r]
    sampled_log_q = tf.reshape(sampled_log_q, [c.num_groups, 2 * w, k])[:, w - r:w + r]
    groups = c.num_groups
    to_groups = lambda x, inverse=False: _to_groups(x, groups, inverse)
    text = tf.reshape(ids, [runs, length + 2 * w])
    present = tf.cast(tf.not_equal(text, 0), tf.float32)               # [R, L + 2w]
    reduced = tf.reshape(reduced, [runs, length])
    shifted = lambda x, o: x[:, w + o:w + o + length]                   # context at offset o
    mask = tf.stack([tf.cast(reduced >= abs(o), tf.float32) * shifted(present, o)
                     for o in offsets], 2) * shifted(present, 0)[:, :, None]   # [R, L, 2r]
    hidden = tf.gather(self.input_embeddings, tf.reshape(centres, [runs, length]))
    out_text = tf.gather(self.output_embeddings, text)                 # [R, L + 2w, d]
    true_logit = tf.stack([tf.reduce_sum(hidden * shifted(out_text, o), 2)
                           for o in offsets], 2)                       # [R, L, 2r]
    true_logit -= tf.reshape(true_log_q, [runs, length, 2 * r])
    sampled = tf.reshape(sampled, [groups, 2 * r * k])
    w_samp = tf.gather(self.output_embeddings, sampled)                # [G, 2r k, d]
    hidden_g = tf.reshape(to_groups(tf.reshape(hidden, [batch, dim])), [groups, -1, dim])
    samp_logit = tf.reshape(tf.einsum("gmd,gnd->gmn", hidden_g, w_samp),
                            [groups, -1, 2 * r, k])                    # [G, m, 2r, k]
    samp_logit -= tf.reshape(sampled_log_q, [groups, 1, 2 * r, k])
    if c.train_biases:
      bias_text = tf.gather(self.output_biases, text)
      true_logit += tf.stack([shifted(bias_text, o) for o in offsets], 2)
      samp_logit += tf.reshape(tf.gather(self.output_biases, sampled), [groups, 1, 2 * r, k])
    slots = lambda x: tf.reshape(to_groups(tf.reshape(x, [batch, 2 * r])),
                                 [groups, -1, 2 * r])                  # -> [G, m, 2r]
    if c.remove_accidental_hits:
      contexts = slots(tf.stack([shifted(text, o) for o in offsets], 2))
      hit = tf.equal(contexts[..., None], tf.reshape(sampled, [groups, 1, 2 * r, k]))
      keep = 1.0 - tf.cast(hit, tf.float32)
    else:
      keep = tf.ones_like(samp_logit)
    mask_g = slots(mask)
    loss, d_true, d_samp = _loss_and_logit_grads(c.loss, slots(true_logit), samp_logit, keep)
    loss *= mask_g
    d_samp *= mask_g[..., None]
    d_true = tf.reshape(to_groups(tf.reshape(d_true * mask_g, [batch, 2 * r]), inverse=True),
                        [runs, length, 2 * r])
    d_samp = tf.reshape(d_samp, [groups, -1, 2 * r * k])
    d_hidden = (tf.reshape(to_groups(tf.reshape(tf.einsum("gmn,gnd->gmd", d_samp, w_samp),
                                                [batch, dim]), inverse=True),
                           [runs, length, dim])
                + tf.add_n([d_true[:, :, i, None] * shifted(out_text, o)
                            for i, o in enumerate(offsets)]))         # [R, L, d]
    d_w_samp = tf.einsum("gmn,gmd->gnd", d_samp, hidden_g)            # [G, 2r k, d]
    # Text position q receives d_true[k, o] * hidden[k] from centre k = q - w - o, for
    # each offset o: shifted slices of zero-padded arrays, as in `_cbow_window_sgd`.
    pad = lambda x: tf.pad(x, [[0, 0], [2 * w, 2 * w], [0, 0]])
    padded_h, padded_d = pad(hidden), pad(d_true)
    window_of = lambda x, o: x[:, w - o:w - o + length + 2 * w]
    d_text = tf.add_n([window_of(padded_d, o)[:, :, i, None] * window_of(padded_h, o)
                       for i, o in enumerate(offsets)])                # [R, L + 2w, d]
    centre_ids = tf.reshape(centres, [-1])
    out_ids = tf.concat([ids, tf.reshape(sampled, [-1])], 0)
    in_scale = out_scale = None
    if c.row_update == "bounded":
      # Per-example updates (`_row_scale`): a centre's pairs, the pairs a text position is
      # the context of, sqrt(the pairs that use a draw).
      n_text = tf.add_n([window_of(pad(mask), o)[:, :, i]
                         for i, o in enumerate(offsets)])              # [R, L + 2w]
      in_scale = self._row_scale(centre_ids, lr, tf.reshape(tf.reduce_sum(mask, 2), [-1]))
      out_scale = self._row_scale(out_ids, lr, tf.concat(
          [tf.reshape(n_text, [-1]),
           tf.reshape(tf.sqrt(tf.reduce_sum(keep * mask_g[..., None], 1)), [-1])], 0))
    self._apply(self.input_embeddings, centre_ids, lr * tf.reshape(d_hidden, [batch, dim]),
                in_scale)
    self._apply(self.output_embeddings, out_ids,
                lr * tf.concat([tf.reshape(d_text, [-1, dim]),
                                tf.reshape(d_w_samp, [-1, dim])], 0), out_scale)
    if c.train_biases:
      d_bias_text = tf.add_n([window_of(padded_d, o)[:, :, i]
                              for i, o in enumerate(offsets)])         # [R, L + 2w]
      self._apply(self.output_biases, out_ids,
                  lr * tf.concat([tf.reshape(d_bias_text, [-1]),
                                  tf.reshape(tf.reduce_sum(d_samp, 1), [-1])], 0), out_scale)
    return tf.reduce_sum(loss) / tf.maximum(tf.reduce_sum(mask), 1.0)

  def _cbow_window_sgd(self, ids, reduced, targets, sampled, true_log_q, sampled_log_q, lr):
    """One CBOW minibatch given as R runs of consecutive centres with their text windows.

    Run r holds L = batch_size / R consecutive centres and the text around them: L + 2w
    ids (w = window), the centres in the middle; 0 marks a position with no word (UNK never
    reaches training, so 0 is free). Each centre's contexts are the ids within its reduced
    window. The context updates are summed per position of a run before one scatter:
    R (L + 2w) rows instead of batch * 2w (that scatter is most of the example layout's
    step time). Runs come from different places of the text (`data.pipeline.cbow_windows`),
    so a minibatch is not one stretch of a document whose topic words would all get their
    updates at once. A group of examples sharing negatives is strided (examples j,
    j + num_groups, ...), i.e. spread over the runs: neighbouring centres have nearly equal
    hidden vectors and their negative updates would add up. Centres without any context
    word (or padding) get weight 0.

    Args:
      ids: int32 [R * (L + 2w)] the R windows of text, one after the other.
      reduced: int32 [batch] reduced window of each centre (1..w), run by run.
      targets: int32 [batch] the centres, run by run.
      sampled, true_log_q, sampled_log_q: as for `head` (true_log_q in centre order).
      lr: scalar learning rate.

    Returns:
      Scalar, the mean loss over the real examples.
    """
    c = self.config
    w, batch, dim = c.window, c.batch_size, c.dim
    runs, length = self._run_shape(ids.shape[0])
    text = tf.reshape(ids, [runs, length + 2 * w])
    present = tf.cast(tf.not_equal(text, 0), tf.float32)               # [R, L + 2w]
    reduced = tf.reshape(reduced, [runs, length])
    offsets = self._offsets()
    masks = [(o, tf.cast(reduced >= abs(o), tf.float32) * present[:, w + o:w + o + length])
             for o in offsets]                                         # [R, L] each
    # The forward pass gathers each example's contexts from the table (as the example
    # layout does: XLA fuses that gather into the masked sum); shifted slices of one
    # gathered window measured 2x slower.
    contexts = tf.reshape(tf.stack([text[:, w + o:w + o + length] for o in offsets], 2),
                          [batch, 2 * w])
    mask = tf.reshape(tf.stack([m for _, m in masks], 2), [batch, 2 * w])
    total = tf.reduce_sum(tf.gather(self.input_embeddings, contexts) * mask[:, :, None], 1)
    count = tf.reduce_sum(mask, 1)                                     # [B]
    weights = (tf.cast(count > 0, tf.float32)
               * tf.reshape(present[:, w:w + length], [batch]))
    hidden = total / tf.maximum(count, 1.0)[:, None]
    groups = c.num_groups
    to_groups = lambda x, inverse=False: _to_groups(x, groups, inverse)
    loss, d_hidden, out_ids, d_out, d_bias, (_, n_out) = self.head(
        to_groups(hidden), to_groups(targets), sampled, to_groups(true_log_q),
        sampled_log_q, weights=to_groups(weights), with_counts=True)
    d_hidden = tf.reshape(to_groups(d_hidden, inverse=True), [runs, length, dim])
    out_scale = self._row_scale(out_ids, lr, n_out)
    self._apply(self.output_embeddings, out_ids, lr * d_out, out_scale)
    if c.train_biases:
      self._apply(self.output_biases, out_ids, lr * d_bias, out_scale)
    # word2vec.c (cbow_mean=1) adds the hidden gradient to every context word, undivided:
    # position q of a run receives m_o[k] * d_hidden[k] from centre k = q - w - o, for each
    # offset o: shifted slices of one zero-padded array (XLA fuses them into one loop; a pad
    # per offset measured 2x slower).
    padded = tf.pad(d_hidden, [[0, 0], [2 * w, 2 * w], [0, 0]])         # [R, L + 4w, d]
    updates = tf.add_n([
        tf.pad(m, [[0, 0], [2 * w, 2 * w]])[:, w - o:w - o + length + 2 * w, None]
        * padded[:, w - o:w - o + length + 2 * w] for o, m in masks])    # [R, L + 2w, d]
    in_scale = None
    if c.row_update == "bounded":
      # Per-example updates (`_row_scale`): the examples a text position is a context of.
      n_text = tf.add_n([tf.pad(m * tf.reshape(weights, [runs, length]),
                                [[0, 0], [2 * w, 2 * w]])[:, w - o:w - o + length + 2 * w]
                         for o, m in masks])                           # [R, L + 2w]
      in_scale = self._row_scale(ids, lr, tf.reshape(n_text, [-1]))
    self._apply(self.input_embeddings, ids, lr * tf.reshape(updates, [-1, dim]), in_scale)
    return tf.reduce_sum(loss) / tf.maximum(tf.reduce_sum(weights), 1.0)

  def _block(self, inputs, lengths, targets, sampled, true_log_q, sampled_log_q, lrs,
             window=None):
    """steps_per_call minibatches in one compiled loop; returns their mean loss.

    `window` (a Python int, skip-gram runs only): the largest reduced window of the block;
    default the maximum.
    """
    c = self.config
    steps = c.steps_per_call
    if c.layout == "runs" and c.model == "skipgram":
      sgd = functools.partial(self._skipgram_window_sgd, window or c.window)
    elif c.layout == "runs":
      sgd = self._cbow_window_sgd
    else:
      sgd = self._sgd

    def body(i, total):
      return i + 1, total + sgd(inputs[i], lengths[i], targets[i], sampled[i],
                                true_log_q[i], sampled_log_q[i], lrs[i])

    _, total = tf.while_loop(lambda i, _: i < steps, body, (0, tf.constant(0.0)))
    return total / steps

  def _sample_targets(self, inputs, targets):
    """What the negatives are drawn against: the targets, or the slots of skip-gram runs."""
    c = self.config
    if c.model == "skipgram" and c.layout == "runs":
      return self.slot_contexts(inputs)
    return targets

  def _sample_and_block(self, inputs, lengths, targets, lrs, step, window=None):
    sampled, true_log_q, sampled_log_q = self._draw(self._sample_targets(inputs, targets),
                                                    step)
    return self._block(inputs, lengths, targets, sampled, true_log_q, sampled_log_q, lrs,
                       window)

  def _train_block_outside(self, inputs, lengths, targets, lrs, window=None):
    sampled, true_log_q, sampled_log_q = self._sample_with_op(
        self._sample_targets(inputs, targets))
    return self._compiled_block(inputs, lengths, targets, sampled, true_log_q,
                                sampled_log_q, lrs, window)

  def block_window(self, lengths):
    """The compiled program a block runs: for skip-gram runs its largest reduced window (one
    program per window; the pipeline draws one per block), else None (one program)."""
    if self.config.model == "skipgram" and self.config.layout == "runs":
      return int(np.max(lengths))
    return None

  def train_block(self, inputs, lengths, targets, lrs, step=0):
    """Samples negatives and runs one compiled block of SGD steps.

    Args:
      inputs: layout "runs": int32 [steps, R * (batch / R + 2 * window)] runs of text (see
        `_skipgram_window_sgd`, `_cbow_window_sgd`); layout "examples": [steps, batch]
        skip-gram centres or [steps, batch, 2 * window] padded CBOW contexts.
      lengths: int32 [steps, batch] reduced windows (runs), context lengths (CBOW
        examples), ignored (skip-gram examples).
      targets: int32 [steps, batch] centres (runs), targets (examples).
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
