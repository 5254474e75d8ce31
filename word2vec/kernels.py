"""word2vec's fused SGD step: functions over explicit tables (the hot kernel of the app).

Why a fused step and not `GradientTape` over `tf.nn.nce_loss`: the tape over
`tf.nn.nce_loss` with plain sparse SGD measured 2-4x slower (DESIGN.md; figures in the README's
benchmark section) and diverges at large batches, because every example of the batch shares the same sampled rows and their
summed gradients overshoot. The fused step computes exactly the logits of
`tf.nn.nce_loss` / `tf.nn.sampled_softmax_loss` (true logit w.x + b - log Q, sampled logits
likewise, accidental hits removed; `head`) and applies the hand-derived gradients with
word2vec's per-example SGD, but it draws a separate set of `num_sampled` negatives for each
*group* of `group_size` examples instead of one set for the whole batch. With groups of 64
(skip-gram) or 128 (CBOW) examples the sampled rows get few summed contributions (word2vec's
behaviour, so word2vec's learning rate works), while the [group, num_sampled] logit blocks
are still matrix products.
Several minibatches run in one XLA-compiled `tf.while_loop` (`block`) to remove per-step
dispatch overhead, and the negatives of the fixed-distribution samplers are drawn inside it
too (`draw`: an inverse-CDF binary search; the tf candidate-sampler op outside XLA took about
a fifth of the step time). Training reads runs of consecutive centres with their text
(`skipgram_window_sgd`, `cbow_window_sgd`), so that each table row of a run position is read
and written once and the updates are summed per text position before one scatter. A table
row that several examples of one step update moves by their sum, bounded (`row_scale`,
`apply_update`).

Every function takes the model's static `StepConfig` (word2vec/model.py) and the `Tables` it
reads and updates; the compiled boundaries (`tf.function(..., jit_compile=True)`) are the
model's (`Word2Vec`). `tests/test_word2vec_model.py` checks loss and gradients against
`tf.nn.nce_loss` and `tf.nn.sampled_softmax_loss` under `GradientTape`, the skip-gram run step
against them pair by pair, and the CBOW run step against the example layout (one padded
example per centre, the layout of evaluation; tests/w2v_reference.py runs its SGD step).
"""
import dataclasses
import functools
import typing

import numpy as np
import tensorflow as tf

from tf_embeddings.losses import samplers as samplers_lib
from tf_embeddings.training.distribute import gather_rows

# Samplers with a fixed distribution, drawn inside the compiled block (`draw`);
# learned_unigram is stateful and uses the tf op outside XLA (`sample_with_op`).
IN_GRAPH_SAMPLERS = ("log_uniform", "unigram", "uniform")


@dataclasses.dataclass(frozen=True)
class Tables:
  """The variables a step reads and updates.

  Attributes:
    input_embeddings: [vocab_size, dim], the input vectors (the exported embeddings).
    output_embeddings: [vocab_size, dim], the output vectors of NCE / sampled softmax.
    output_biases: [vocab_size], the output biases.
    row_counts: [vocab_size] scratch counts of `row_scale` (row_update "bounded", all zero
      between steps), else None.
  """
  input_embeddings: tf.Variable
  output_embeddings: tf.Variable
  output_biases: tf.Variable
  row_counts: typing.Optional[tf.Variable] = None


@dataclasses.dataclass(frozen=True)
class SamplerTables:
  """The fixed distribution P of an in-graph sampler, as `draw` searches it.

  Attributes:
    cumulative: int64 [vocab_size] cumulative integer weights (total 2^52, exact in int64
      and float64): a draw is the first id whose cumulative weight exceeds a uniform integer
      in [0, total).
    total: int, the sum of the weights.
    log_p: float32 [vocab_size] log P (at least -1e4: a zero weight's id is never drawn).
    search_steps: int, ceil(log2(vocab_size)), the binary search's gathers.
  """
  cumulative: tf.Tensor
  total: int
  log_p: tf.Tensor
  search_steps: int


def sampler_tables(config, unigrams=None):
  """SamplerTables of config.sampler (one of IN_GRAPH_SAMPLERS) over config.vocab_size ids.

  unigrams: float counts [vocab_size] (UNK's zeroed), needed by the unigram sampler.
  """
  probs = samplers_lib.sampler_probabilities(config.sampler, config.vocab_size,
                                             unigrams=unigrams,
                                             distortion=config.distortion)
  weights = np.round(probs * float(1 << 52)).astype(np.int64)
  with np.errstate(divide="ignore"):
    log_p = tf.constant(np.maximum(np.log(probs), -1e4), tf.float32)
  return SamplerTables(cumulative=tf.constant(np.cumsum(weights), tf.int64),
                       total=int(weights.sum()), log_p=log_p,
                       search_steps=max(1, int(np.ceil(np.log2(config.vocab_size)))))


def loss_and_logit_grads(loss, true_logit, samp_logit, keep):
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


def regroup(x, groups, inverse=False):
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


def draw(config, sampler, seed, targets, step):
  """In-graph (XLA-compilable) sampling from the fixed distribution P of the sampler.

  Each group draws num_sampled ids with replacement, so the expected count of id j among a
  group's draws is num_sampled * P(j), the `unique=False` expected count of
  tf.random.*_candidate_sampler for num_sampled tries. The draw is an inverse-CDF lookup:
  a binary search over the integer cumulative weights, ceil(log2(vocab_size)) gathers.

  Args:
    config: the model's StepConfig.
    sampler: SamplerTables of config's sampler (`sampler_tables`).
    seed: int, the model's seed.
    targets: int32 [steps_per_call, batch_size] target ids; for skip-gram runs, the
      context id of every (centre, offset) slot, [steps_per_call, batch_size, 2 * window]
      (`slot_contexts`).
    step: int64 scalar, the global step of the block's first minibatch; with the seed it
      determines the draws (a resumed run draws what the uninterrupted one would have).

  Returns:
    sampled: int32 [steps_per_call, negative_groups, num_sampled].
    true_log_q: float32, the shape of targets: log of the expected count of the target
      among a group's draws (0 when subtract_log_q is off).
    sampled_log_q: float32 [steps_per_call, negative_groups, num_sampled], likewise.
  """
  c = config
  shape = [c.steps_per_call, c.negative_groups, c.num_sampled]
  seed = tf.stack([tf.constant(seed, tf.int64), step])
  x = tf.random.stateless_uniform(shape, seed, minval=0, maxval=sampler.total,
                                  dtype=tf.int64)
  lo = tf.zeros(shape, tf.int64)
  hi = tf.fill(shape, tf.constant(c.vocab_size - 1, tf.int64))
  for _ in range(sampler.search_steps):
    mid = (lo + hi) // 2
    above = tf.gather(sampler.cumulative, mid) > x
    hi = tf.where(above, mid, hi)
    lo = tf.where(above, lo, mid + 1)
  sampled = tf.cast(lo, tf.int32)
  if not c.subtract_log_q:
    return (sampled, tf.zeros(tf.shape(targets), tf.float32), tf.zeros(shape, tf.float32))
  log_k = float(np.log(c.num_sampled))
  return (sampled, tf.gather(sampler.log_p, targets) + log_k,
          tf.gather(sampler.log_p, sampled) + log_k)


def sample_with_op(config, unigrams, seed, targets):
  """`draw` with the tf candidate-sampler op (for learned_unigram: it runs outside XLA).

  unigrams: the model's float counts (UNK's zeroed), or None.
  """
  c = config
  total = c.steps_per_call * c.negative_groups * c.num_sampled
  true_classes = tf.reshape(tf.cast(targets, tf.int64), [-1, 1])
  sampled, true_count, sampled_count = samplers_lib.sample_candidates(
      c.sampler, true_classes, 1, total, c.vocab_size, unique=False,
      unigrams=unigrams, distortion=c.distortion, seed=seed)
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


def row_scale(config, tables, ids, lr, updates):
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
  if config.row_update == "sum":
    return None
  tables.row_counts.scatter_add(tf.IndexedSlices(updates, ids))
  total = tf.gather(tables.row_counts, ids)
  tables.row_counts.scatter_update(tf.IndexedSlices(tf.zeros_like(updates), ids))
  return 1.0 / tf.maximum(lr * total, 1.0)


def apply_update(table, ids, updates, scale):
  """table[ids] -= updates (rows summed), each row first multiplied by scale (if any)."""
  if scale is not None:
    updates *= scale if updates.shape.rank == 1 else scale[:, None]
  table.scatter_sub(tf.IndexedSlices(updates, ids))


def head(config, tables, hidden, targets, sampled, true_log_q, sampled_log_q, weights=None,
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
    With with_counts, also the per-example update counts of `row_scale`:
    n_hidden: float32 [batch], 1 per real example (its input vector's update);
    n_out: float32 [batch + num_groups * num_sampled], for the rows of out_ids: 1 per
      real example's target, sqrt(examples of the group that keep it) per drawn row.
  """
  c = config
  groups, dim = c.num_groups, c.dim
  w_true = tf.gather(tables.output_embeddings, targets)            # [B, d]
  w_samp = tf.gather(tables.output_embeddings, sampled)            # [G, k, d]
  true_logit = tf.reduce_sum(hidden * w_true, 1) - true_log_q    # [B]
  hidden_g = tf.reshape(hidden, [groups, -1, dim])               # [G, g, d]
  samp_logit = tf.einsum("ngd,nkd->ngk", hidden_g, w_samp)       # [G, g, k]
  samp_logit -= sampled_log_q[:, None, :]
  if c.train_biases:
    true_logit += tf.gather(tables.output_biases, targets)
    samp_logit += tf.gather(tables.output_biases, sampled)[:, None, :]
  if c.remove_accidental_hits:
    hit = tf.equal(tf.reshape(targets, [groups, -1, 1]), sampled[:, None, :])
    keep = 1.0 - tf.cast(hit, tf.float32)                        # [G, g, k]
  else:
    keep = tf.ones_like(samp_logit)
  loss, d_true, d_samp = loss_and_logit_grads(
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


def hidden(config, tables, inputs, lengths=None):
  """Input vector of each example: centre vector, or mean of the context vectors.

  Args:
    inputs: int32 [batch] (skip-gram) or [batch, 2 * window] (CBOW, padded).
    lengths: int32 [batch] number of real context ids (CBOW only).

  Returns:
    float32 [batch, dim]. (The tables may be ShardedVariables: evaluation on a cluster.)
  """
  if config.model == "skipgram":
    return gather_rows(tables.input_embeddings, inputs)
  mask = tf.sequence_mask(lengths, tf.shape(inputs)[1], tf.float32)   # [B, 2w]
  vectors = gather_rows(tables.input_embeddings, inputs)                # [B, 2w, d]
  total = tf.reduce_sum(vectors * mask[:, :, None], 1)
  return total / tf.cast(lengths, tf.float32)[:, None]


def run_shape(config, width):
  """(runs R, centres per run L) of a minibatch of runs whose text is `width` ids."""
  c = config
  runs = (width - c.batch_size) // (2 * c.window)
  return runs, c.batch_size // runs


def context_offsets(config):
  """The context offsets -w..-1, 1..w of the window w."""
  w = config.window
  return [o for o in range(-w, w + 1) if o]


def slot_contexts(config, inputs):
  """The context id of every (centre, offset) slot of a block of skip-gram runs.

  Args:
    inputs: int32 [steps, R * (L + 2w)] runs of text (see `skipgram_window_sgd`).

  Returns:
    int32 [steps, batch_size, 2w]: for centre i (run by run) and offset o in
    -w..-1, 1..w (in that order), the id o positions away; 0 where there is no word. The
    reduced windows are not applied (the step masks those slots).
  """
  c = config
  w = c.window
  steps = inputs.shape[0]
  runs, length = run_shape(config, inputs.shape[1])
  text = tf.reshape(inputs, [steps, runs, length + 2 * w])
  contexts = tf.stack([text[:, :, w + o:w + o + length] for o in context_offsets(config)], 3)
  return tf.reshape(contexts, [steps, c.batch_size, 2 * w])


def skipgram_window_sgd(config, tables, r, ids, reduced, centres, sampled, true_log_q,
                        sampled_log_q, lr):
  """One skip-gram minibatch given as R runs of consecutive centres with their text.

  The layout is CBOW's (`cbow_window_sgd`): run k holds L = batch_size / R consecutive
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
      tables: measured 2.5x slower).

  Returns:
    Scalar, the mean loss over the real pairs.
  """
  c = config
  w, batch, dim, k = c.window, c.batch_size, c.dim, c.num_sampled
  runs, length = run_shape(config, ids.shape[0])
  # Only the slots within r of their centre: the columns w - r .. w + r - 1 of the
  # [-w..-1, 1..w] offset order, in the draws as in the slots.
  offsets = [o for o in range(-r, r + 1) if o]
  true_log_q = tf.reshape(true_log_q, [batch, 2 * w])[:, w - r:w + r]
  sampled = tf.reshape(sampled, [c.num_groups, 2 * w, k])[:, w - r:w + r]
  sampled_log_q = tf.reshape(sampled_log_q, [c.num_groups, 2 * w, k])[:, w - r:w + r]
  groups = c.num_groups
  to_groups = lambda x, inverse=False: regroup(x, groups, inverse)
  text = tf.reshape(ids, [runs, length + 2 * w])
  present = tf.cast(tf.not_equal(text, 0), tf.float32)               # [R, L + 2w]
  reduced = tf.reshape(reduced, [runs, length])
  shifted = lambda x, o: x[:, w + o:w + o + length]                   # context at offset o
  mask = tf.stack([tf.cast(reduced >= abs(o), tf.float32) * shifted(present, o)
                   for o in offsets], 2) * shifted(present, 0)[:, :, None]   # [R, L, 2r]
  hidden = tf.gather(tables.input_embeddings, tf.reshape(centres, [runs, length]))
  out_text = tf.gather(tables.output_embeddings, text)                 # [R, L + 2w, d]
  true_logit = tf.stack([tf.reduce_sum(hidden * shifted(out_text, o), 2)
                         for o in offsets], 2)                       # [R, L, 2r]
  true_logit -= tf.reshape(true_log_q, [runs, length, 2 * r])
  sampled = tf.reshape(sampled, [groups, 2 * r * k])
  w_samp = tf.gather(tables.output_embeddings, sampled)                # [G, 2r k, d]
  hidden_g = tf.reshape(to_groups(tf.reshape(hidden, [batch, dim])), [groups, -1, dim])
  samp_logit = tf.reshape(tf.einsum("gmd,gnd->gmn", hidden_g, w_samp),
                          [groups, -1, 2 * r, k])                    # [G, m, 2r, k]
  samp_logit -= tf.reshape(sampled_log_q, [groups, 1, 2 * r, k])
  if c.train_biases:
    bias_text = tf.gather(tables.output_biases, text)
    true_logit += tf.stack([shifted(bias_text, o) for o in offsets], 2)
    samp_logit += tf.reshape(tf.gather(tables.output_biases, sampled), [groups, 1, 2 * r, k])
  slots = lambda x: tf.reshape(to_groups(tf.reshape(x, [batch, 2 * r])),
                               [groups, -1, 2 * r])                  # -> [G, m, 2r]
  if c.remove_accidental_hits:
    contexts = slots(tf.stack([shifted(text, o) for o in offsets], 2))
    hit = tf.equal(contexts[..., None], tf.reshape(sampled, [groups, 1, 2 * r, k]))
    keep = 1.0 - tf.cast(hit, tf.float32)
  else:
    keep = tf.ones_like(samp_logit)
  mask_g = slots(mask)
  loss, d_true, d_samp = loss_and_logit_grads(c.loss, slots(true_logit), samp_logit, keep)
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
  # each offset o: shifted slices of zero-padded arrays, as in `cbow_window_sgd`.
  pad = lambda x: tf.pad(x, [[0, 0], [2 * w, 2 * w], [0, 0]])
  padded_h, padded_d = pad(hidden), pad(d_true)
  window_of = lambda x, o: x[:, w - o:w - o + length + 2 * w]
  d_text = tf.add_n([window_of(padded_d, o)[:, :, i, None] * window_of(padded_h, o)
                     for i, o in enumerate(offsets)])                # [R, L + 2w, d]
  centre_ids = tf.reshape(centres, [-1])
  out_ids = tf.concat([ids, tf.reshape(sampled, [-1])], 0)
  in_scale = out_scale = None
  if c.row_update == "bounded":
    # Per-example updates (`row_scale`): a centre's pairs, the pairs a text position is
    # the context of, sqrt(the pairs that use a draw).
    n_text = tf.add_n([window_of(pad(mask), o)[:, :, i]
                       for i, o in enumerate(offsets)])              # [R, L + 2w]
    in_scale = row_scale(config, tables, centre_ids, lr, tf.reshape(tf.reduce_sum(mask, 2), [-1]))
    out_scale = row_scale(config, tables, out_ids, lr, tf.concat(
        [tf.reshape(n_text, [-1]),
         tf.reshape(tf.sqrt(tf.reduce_sum(keep * mask_g[..., None], 1)), [-1])], 0))
  apply_update(tables.input_embeddings, centre_ids, lr * tf.reshape(d_hidden, [batch, dim]),
               in_scale)
  apply_update(tables.output_embeddings, out_ids,
               lr * tf.concat([tf.reshape(d_text, [-1, dim]),
                               tf.reshape(d_w_samp, [-1, dim])], 0), out_scale)
  if c.train_biases:
    d_bias_text = tf.add_n([window_of(padded_d, o)[:, :, i]
                            for i, o in enumerate(offsets)])         # [R, L + 2w]
    apply_update(tables.output_biases, out_ids,
                 lr * tf.concat([tf.reshape(d_bias_text, [-1]),
                                 tf.reshape(tf.reduce_sum(d_samp, 1), [-1])], 0), out_scale)
  return tf.reduce_sum(loss) / tf.maximum(tf.reduce_sum(mask), 1.0)


def cbow_window_sgd(config, tables, ids, reduced, targets, sampled, true_log_q, sampled_log_q,
                    lr):
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
  c = config
  w, batch, dim = c.window, c.batch_size, c.dim
  runs, length = run_shape(config, ids.shape[0])
  text = tf.reshape(ids, [runs, length + 2 * w])
  present = tf.cast(tf.not_equal(text, 0), tf.float32)               # [R, L + 2w]
  reduced = tf.reshape(reduced, [runs, length])
  offsets = context_offsets(config)
  masks = [(o, tf.cast(reduced >= abs(o), tf.float32) * present[:, w + o:w + o + length])
           for o in offsets]                                         # [R, L] each
  # The forward pass gathers each example's contexts from the table (as the example
  # layout does: XLA fuses that gather into the masked sum); shifted slices of one
  # gathered window measured 2x slower.
  contexts = tf.reshape(tf.stack([text[:, w + o:w + o + length] for o in offsets], 2),
                        [batch, 2 * w])
  mask = tf.reshape(tf.stack([m for _, m in masks], 2), [batch, 2 * w])
  total = tf.reduce_sum(tf.gather(tables.input_embeddings, contexts) * mask[:, :, None], 1)
  count = tf.reduce_sum(mask, 1)                                     # [B]
  weights = (tf.cast(count > 0, tf.float32)
             * tf.reshape(present[:, w:w + length], [batch]))
  hidden = total / tf.maximum(count, 1.0)[:, None]
  groups = c.num_groups
  to_groups = lambda x, inverse=False: regroup(x, groups, inverse)
  loss, d_hidden, out_ids, d_out, d_bias, (_, n_out) = head(
      config, tables, to_groups(hidden), to_groups(targets), sampled, to_groups(true_log_q),
      sampled_log_q, weights=to_groups(weights), with_counts=True)
  d_hidden = tf.reshape(to_groups(d_hidden, inverse=True), [runs, length, dim])
  out_scale = row_scale(config, tables, out_ids, lr, n_out)
  apply_update(tables.output_embeddings, out_ids, lr * d_out, out_scale)
  if c.train_biases:
    apply_update(tables.output_biases, out_ids, lr * d_bias, out_scale)
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
    # Per-example updates (`row_scale`): the examples a text position is a context of.
    n_text = tf.add_n([tf.pad(m * tf.reshape(weights, [runs, length]),
                              [[0, 0], [2 * w, 2 * w]])[:, w - o:w - o + length + 2 * w]
                       for o, m in masks])                           # [R, L + 2w]
    in_scale = row_scale(config, tables, ids, lr, tf.reshape(n_text, [-1]))
  apply_update(tables.input_embeddings, ids, lr * tf.reshape(updates, [-1, dim]), in_scale)
  return tf.reduce_sum(loss) / tf.maximum(tf.reduce_sum(weights), 1.0)


def block(config, tables, inputs, lengths, targets, sampled, true_log_q, sampled_log_q, lrs,
          window=None):
  """steps_per_call minibatches of runs in one compiled loop; returns their mean loss.

  `window` (a Python int, skip-gram only): the largest reduced window of the block;
  default the maximum.
  """
  return sgd_loop(config.steps_per_call, minibatch_sgd(config, tables, window), inputs,
                  lengths, targets, sampled, true_log_q, sampled_log_q, lrs)


def minibatch_sgd(config, tables, window=None):
  """The SGD step of one minibatch of runs on `tables`: sgd(inputs, lengths, targets,
  sampled, true_log_q, sampled_log_q, lr) -> mean loss (`skipgram_window_sgd` with the
  static window, default the maximum, or `cbow_window_sgd`)."""
  if config.model == "skipgram":
    return functools.partial(skipgram_window_sgd, config, tables, window or config.window)
  return functools.partial(cbow_window_sgd, config, tables)


def sgd_loop(steps, sgd, inputs, lengths, targets, sampled, true_log_q, sampled_log_q, lrs):
  """`steps` minibatches, one call of sgd(inputs[i], ..., lrs[i]) each, in one
  tf.while_loop (each sees the updates of the ones before); returns their mean loss."""

  def body(i, total):
    return i + 1, total + sgd(inputs[i], lengths[i], targets[i], sampled[i],
                              true_log_q[i], sampled_log_q[i], lrs[i])

  _, total = tf.while_loop(lambda i, _: i < steps, body, (0, tf.constant(0.0)))
  return total / steps


class LocalTable:
  """A table held as a tensor, with the methods the kernels call on a tf.Variable
  (gather through `sparse_read`, `scatter_add`, `scatter_sub`, `scatter_update` of
  IndexedSlices, duplicate rows summed as the variable's), each of which replaces `value`
  by the updated tensor: the kernels run unchanged on rows gathered from tables that live
  elsewhere (`block_on_rows`)."""

  def __init__(self, value):
    self.value = value

  @property
  def shape(self):
    return self.value.shape

  def sparse_read(self, indices, name=None):
    return tf.gather(self.value, indices, name=name)

  def _scatter(self, op, delta):
    self.value = op(self.value, tf.expand_dims(delta.indices, -1), delta.values)

  def scatter_add(self, delta):
    self._scatter(tf.tensor_scatter_nd_add, delta)

  def scatter_sub(self, delta):
    self._scatter(tf.tensor_scatter_nd_sub, delta)

  def scatter_update(self, delta):
    self._scatter(tf.tensor_scatter_nd_update, delta)


def block_on_rows(config, rows, inputs, lengths, targets, sampled, true_log_q,
                  sampled_log_q, lrs, window=None):
  """`block` on the rows of the tables that the block touches, held as tensors.

  The ids of inputs, targets and sampled index `rows` (remapped from the vocabulary,
  id 0 staying 0: it marks "no word"); the block's minibatches run one after the other on
  the updated rows, exactly as `block` runs them on the whole tables (the bounded row
  update's scratch counts are zero between steps, so a local zero vector stands for them).
  Compilable with XLA: what a parameter-server worker runs between gathering the rows from
  the parameter servers and adding their change back (word2vec/model.py).

  Args:
    rows: (input rows [n, dim], output rows [n, dim], bias rows [n]) float32.
    inputs, lengths, targets, sampled, true_log_q, sampled_log_q, lrs, window: as for
      `block`, ids in 0..n-1.

  Returns:
    (mean loss of the block, the three row tensors after it).
  """
  c = config

  def body(i, total, input_rows, output_rows, bias_rows):
    tables = Tables(LocalTable(input_rows), LocalTable(output_rows), LocalTable(bias_rows),
                    LocalTable(tf.zeros_like(bias_rows)) if c.row_update == "bounded" else None)
    loss = minibatch_sgd(config, tables, window)(
        inputs[i], lengths[i], targets[i], sampled[i], true_log_q[i], sampled_log_q[i], lrs[i])
    return (i + 1, total + loss, tables.input_embeddings.value,
            tables.output_embeddings.value, tables.output_biases.value)

  _, total, *after = tf.while_loop(lambda i, *_: i < c.steps_per_call, body,
                                   (0, tf.constant(0.0), *rows))
  return total / c.steps_per_call, tuple(after)


def rows_per_block(config, width):
  """The most distinct table rows one block of runs `width` ids wide can touch
  (`block_on_rows`): id 0, its text, its centres and its negatives, at most the
  vocabulary."""
  c = config
  touched = 1 + c.steps_per_call * (width + c.batch_size + c.negative_groups * c.num_sampled)
  return min(c.vocab_size, touched)


def sample_targets(config, inputs, targets):
  """What the negatives are drawn against: the targets (CBOW), the slots (skip-gram)."""
  if config.model == "skipgram":
    return slot_contexts(config, inputs)
  return targets


def block_window(config, lengths):
  """The compiled program a block runs: for skip-gram its largest reduced window (one
  program per window; the pipeline draws one per block), else None (one program)."""
  if config.model == "skipgram":
    return int(np.max(lengths))
  return None
