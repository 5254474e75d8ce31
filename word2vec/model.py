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
CBOW trains from runs of consecutive centres with their text (`_cbow_window_sgd`), so that
the context updates are summed per text position before one scatter.
`tests/test_word2vec_model.py` checks loss and gradients against `tf.nn.nce_loss` and
`tf.nn.sampled_softmax_loss` under `GradientTape`, and the CBOW run layout against the
example layout.
"""
import dataclasses

import numpy as np
import tensorflow as tf

from losses import samplers as samplers_lib

MODELS = ("skipgram", "cbow")
# Samplers with a fixed distribution, drawn inside the compiled block; learned_unigram is
# stateful and uses the tf op outside XLA.
IN_GRAPH_SAMPLERS = ("log_uniform", "unigram", "uniform")
LOSSES = ("nce", "sampled_softmax")


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

  @property
  def num_groups(self):
    return self.batch_size // self.group_size


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
    self.config = c
    self.seed = seed
    half = 0.5 / c.dim
    # Input vectors, the exported embeddings: [vocab_size, dim].
    self.input_embeddings = tf.Variable(
        tf.random.stateless_uniform([c.vocab_size, c.dim], [seed, 1], -half, half),
        name="input_embeddings")
    # Output vectors of NCE / sampled softmax: [vocab_size, dim].
    self.output_embeddings = tf.Variable(tf.zeros([c.vocab_size, c.dim]),
                                         name="output_embeddings")
    # Output biases: [vocab_size].
    self.output_biases = tf.Variable(tf.zeros([c.vocab_size]), name="output_biases")
    if unigram_counts is not None:
      counts = np.asarray(unigram_counts, np.float64).copy()
      counts[0] = 0.0
      self._unigrams = [float(x) for x in counts]
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
      targets: int32 [steps_per_call, batch_size] target ids.
      step: int, the global step of the block's first minibatch; with the model's seed it
        determines the draws of the fixed-distribution samplers (a resumed run draws what
        the uninterrupted one would have).

    Returns:
      sampled: int32 [steps_per_call, num_groups, num_sampled].
      true_log_q: float32 [steps_per_call, batch_size], log of the expected count of the
        target among a group's draws (0 when subtract_log_q is off).
      sampled_log_q: float32 [steps_per_call, num_groups, num_sampled], likewise.
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
    shape = [c.steps_per_call, c.num_groups, c.num_sampled]
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
    total = c.steps_per_call * c.num_groups * c.num_sampled
    true_classes = tf.reshape(tf.cast(targets, tf.int64), [-1, 1])
    sampled, true_count, sampled_count = samplers_lib.sample_candidates(
        c.sampler, true_classes, 1, total, c.vocab_size, unique=False,
        unigrams=self._unigrams, distortion=c.distortion, seed=self.seed)
    shape = [c.steps_per_call, c.num_groups, c.num_sampled]
    sampled = tf.reshape(tf.cast(sampled, tf.int32), shape)
    if not c.subtract_log_q:
      return (sampled, tf.zeros(tf.shape(targets), tf.float32), tf.zeros(shape, tf.float32))
    # With unique=False the sampler's expected counts are total * P; a group draws
    # num_sampled, so its expected count is num_sampled * P.
    per_group = c.num_sampled / total
    true_log_q = tf.math.log(tf.reshape(true_count, tf.shape(targets)) * per_group)
    sampled_log_q = tf.math.log(tf.reshape(sampled_count, shape) * per_group)
    return sampled, true_log_q, sampled_log_q

  # ---- the loss head: logits and their gradients for one minibatch ----

  def head(self, hidden, targets, sampled, true_log_q, sampled_log_q, weights=None):
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
    if c.loss == "nce":
      loss = (tf.math.softplus(-true_logit)
              + tf.reshape(tf.reduce_sum(tf.math.softplus(samp_logit) * keep, 2), [-1]))
      d_true = tf.sigmoid(true_logit) - 1.0                        # [B]
      d_samp = tf.sigmoid(samp_logit) * keep                       # [G, g, k]
    else:
      # Softmax over [true, sampled...]; removed hits get probability 0.
      masked = samp_logit + (keep - 1.0) * 1e30
      true_g = tf.reshape(true_logit, [groups, -1, 1])
      lse = tf.reduce_logsumexp(tf.concat([true_g, masked], 2), axis=2)  # [G, g]
      loss = tf.reshape(lse, [-1]) - true_logit
      d_true = tf.exp(true_logit - tf.reshape(lse, [-1])) - 1.0
      d_samp = tf.exp(masked - lse[:, :, None])
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
    return loss, d_hidden, out_ids, d_out, d_bias

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
    loss, d_hidden, out_ids, d_out, d_bias = self.head(
        h, targets, sampled, true_log_q, sampled_log_q)
    self.output_embeddings.scatter_sub(tf.IndexedSlices(lr * d_out, out_ids))
    if c.train_biases:
      self.output_biases.scatter_sub(tf.IndexedSlices(lr * d_bias, out_ids))
    if c.model == "skipgram":
      self.input_embeddings.scatter_sub(tf.IndexedSlices(lr * d_hidden, inputs))
    else:
      # word2vec.c (cbow_mean=1) adds the hidden gradient to every context word, undivided.
      mask = tf.sequence_mask(lengths, tf.shape(inputs)[1], tf.float32)
      updates = (lr * mask)[:, :, None] * d_hidden[:, None, :]           # [B, 2w, d]
      self.input_embeddings.scatter_sub(
          tf.IndexedSlices(tf.reshape(updates, [-1, c.dim]), tf.reshape(inputs, [-1])))
    return tf.reduce_mean(loss)

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
    runs = (ids.shape[0] - batch) // (2 * w)
    length = batch // runs
    text = tf.reshape(ids, [runs, length + 2 * w])
    present = tf.cast(tf.not_equal(text, 0), tf.float32)               # [R, L + 2w]
    reduced = tf.reshape(reduced, [runs, length])
    offsets = [o for o in range(-w, w + 1) if o]
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
    # Strided groups: example k * G + j goes to group j (G = num_groups).
    groups = c.num_groups

    def to_groups(x, inverse=False):
      shape = x.shape.as_list()
      split = [groups, batch // groups] if inverse else [batch // groups, groups]
      y = tf.reshape(x, split + shape[1:])
      y = tf.transpose(y, [1, 0] + list(range(2, len(shape) + 1)))
      return tf.reshape(y, shape)

    loss, d_hidden, out_ids, d_out, d_bias = self.head(
        to_groups(hidden), to_groups(targets), sampled, to_groups(true_log_q),
        sampled_log_q, weights=to_groups(weights))
    d_hidden = tf.reshape(to_groups(d_hidden, inverse=True), [runs, length, dim])
    self.output_embeddings.scatter_sub(tf.IndexedSlices(lr * d_out, out_ids))
    if c.train_biases:
      self.output_biases.scatter_sub(tf.IndexedSlices(lr * d_bias, out_ids))
    # word2vec.c (cbow_mean=1) adds the hidden gradient to every context word, undivided:
    # position q of a run receives m_o[k] * d_hidden[k] from centre k = q - w - o, for each
    # offset o: shifted slices of one zero-padded array (XLA fuses them into one loop; a pad
    # per offset measured 2x slower).
    padded = tf.pad(d_hidden, [[0, 0], [2 * w, 2 * w], [0, 0]])         # [R, L + 4w, d]
    updates = tf.add_n([
        tf.pad(m, [[0, 0], [2 * w, 2 * w]])[:, w - o:w - o + length + 2 * w, None]
        * padded[:, w - o:w - o + length + 2 * w] for o, m in masks])    # [R, L + 2w, d]
    self.input_embeddings.scatter_sub(
        tf.IndexedSlices(lr * tf.reshape(updates, [-1, dim]), ids))
    return tf.reduce_sum(loss) / tf.maximum(tf.reduce_sum(weights), 1.0)

  def _block(self, inputs, lengths, targets, sampled, true_log_q, sampled_log_q, lrs):
    """steps_per_call minibatches in one compiled loop; returns their mean loss."""
    steps = self.config.steps_per_call

    # CBOW blocks come either as examples ([steps, batch, 2w] padded contexts) or as runs
    # of text ([steps, R * (batch / R + 2w)], what the training pipeline sends).
    sgd = (self._cbow_window_sgd if self.config.model == "cbow" and inputs.shape.rank == 2
           else self._sgd)

    def body(i, total):
      return i + 1, total + sgd(inputs[i], lengths[i], targets[i], sampled[i],
                                true_log_q[i], sampled_log_q[i], lrs[i])

    _, total = tf.while_loop(lambda i, _: i < steps, body, (0, tf.constant(0.0)))
    return total / steps

  def _sample_and_block(self, inputs, lengths, targets, lrs, step):
    sampled, true_log_q, sampled_log_q = self._draw(targets, step)
    return self._block(inputs, lengths, targets, sampled, true_log_q, sampled_log_q, lrs)

  def _train_block_outside(self, inputs, lengths, targets, lrs):
    sampled, true_log_q, sampled_log_q = self._sample_with_op(targets)
    return self._compiled_block(inputs, lengths, targets, sampled, true_log_q,
                                sampled_log_q, lrs)

  def train_block(self, inputs, lengths, targets, lrs, step=0):
    """Samples negatives and runs one compiled block of SGD steps.

    Args:
      inputs: int32 [steps, batch] (skip-gram), or for CBOW either [steps, batch, 2 * window]
        padded contexts or [steps, R * (batch / R + 2 * window)] runs of text (see
        `_cbow_window_sgd`).
      lengths: int32 [steps, batch] context lengths (CBOW examples), reduced windows (CBOW
        windows); ignored for skip-gram.
      targets: int32 [steps, batch].
      lrs: float32 [steps] learning rate of each minibatch.
      step: int, global step of the block's first minibatch (seeds the negatives).

    Returns:
      Scalar float32, mean per-example training loss of the block.
    """
    if self.config.sampler in IN_GRAPH_SAMPLERS:
      return self._compiled_train(inputs, lengths, targets, lrs, tf.constant(step, tf.int64))
    return self._outside(inputs, lengths, targets, lrs)
