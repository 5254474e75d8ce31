"""The two-tower training objective: one loss object that owns the loss options.

`Objective(train_config, two_tower, item_counts)(batch, step)` returns the scalar loss of
one batch (TFRS `tasks/retrieval.py` habit). It embeds the batch once, divides the scores
by the temperature once, and applies the configured named corrections before calling the
pure functions of `losses/`:
  logQ              subtract w log Q(item), Q the item's share of the positive training
                    stream, w = --logq_weight (--logq_correction; mixed negatives: the log
                    of each candidate's expected count under the mixture);
  accidental hits   drop the negatives equal to the positive (--remove_accidental_hits);
  mixed negatives   score every query against --mixed_negatives items drawn uniformly per
                    step as well (Yang et al., WWW 2020);
  hard negatives    keep only each query's --num_hard_negatives highest-scoring in-batch
                    negatives (TFRS `num_hard_negatives`), after the corrections above;
  history           leave the positive out of the user's pooled history (--use_history);
  id dropout        replace a query's user id by the out-of-vocabulary id with probability
                    --id_dropout (the query then depends on the example, not the user only).
With --ensemble, every member of the towers gets these losses on its own scores (its own
columns of the towers' outputs, `model.member_outputs`), and the loss is their mean: an
ensemble trained in one step, not a loss of the averaged score.
The in-batch softmax takes the cheapest of three equal computations: the batch's [B, B]
logits, [B, items] when the corpus is smaller than the batch, or [distinct users, items]
when the query depends on the user only (`losses.in_batch_softmax_loss_per_item`,
`losses.in_batch_softmax_loss_per_user`).

Multi-task (--tasks): `task_losses(batch, step)` returns one loss per head, each computed
as the single-task loss of that name over the same towers (retrieval heads on every row of
the batch, pointwise heads on the positive pair's score against the row's 0/1 label), and
`TaskWeights` holds the weights of their sum: fixed, or PE-LTR's Pareto-efficient weights
(`losses.pareto_loss_weights`) recomputed from the heads' gradients every N steps.
"""
import numpy as np
import tensorflow as tf

from tf_embeddings import losses
from tf_embeddings.twotower import config as config_lib
from tf_embeddings.twotower import model as model_lib


def negative_distribution(train_config, item_counts):
  """Probabilities [num_items] the sampled-negative losses draw from."""
  n = len(item_counts)
  if train_config.negative_sampler == "uniform":
    return losses.sampler_probabilities("uniform", n)
  return losses.sampler_probabilities("unigram", n, unigrams=np.maximum(item_counts, 1e-3),
                                      distortion=0.75)


def id_dropout_mask(batch_size, rate, step, seed):
  """Which queries of a step embed the OOV user id: bool [batch_size], each True with
  probability `rate`, drawn from (step, seed) so a resumed run repeats it."""
  seeds = tf.stack([tf.cast(step, tf.int32), tf.constant(seed + 104729, tf.int32)])
  return tf.random.stateless_uniform([batch_size], seeds) < rate


def mixed_negative_sample(num, num_items, step, seed):
  """A step's uniformly drawn extra negatives: int64 [num] item indices (with replacement)."""
  seeds = tf.stack([tf.cast(step, tf.int32), tf.constant(seed + 7919, tf.int32)])
  return tf.random.stateless_uniform([num], seeds, 0, num_items, tf.int64)


class Objective:
  """The configured loss of a `TwoTower`: `objective(batch, step)` -> scalar float32.

  Args:
    train_config: `TrainConfig` (loss, temperature, corrections, negatives).
    two_tower: `TwoTower`.
    item_counts: int [num_items] item frequencies in the positive training stream
      (logQ correction and popularity negatives).
  """

  def __init__(self, train_config, two_tower, item_counts, replicas=False):
    t = self.config = train_config
    # Called in each replica of a synchronous strategy (`replicas`): the in-batch softmax
    # gathers the candidates of every replica, and each replica returns its share of the
    # global batch's mean (the replicas' losses and gradients are summed).
    self.replicas = replicas
    self.query_tower, self.item_tower = two_tower.query_tower, two_tower.item_tower
    # --ensemble: the towers' outputs hold this many members side by side; every loss is
    # computed on each member's own scores and averaged (`each_member`).
    self.members = self.query_tower.members
    self.num_items = self.item_tower.num_ids
    self.temperature = t.temperature
    self.num_hard_negatives = t.num_hard_negatives or None
    # log Q(item): the item's share of the training stream, [num_items].
    self.log_q = tf.constant(np.log(np.maximum(item_counts, 1) / max(item_counts.sum(), 1)),
                             tf.float32)
    # bce negatives: log-probabilities of every item, [1, num_items].
    self.neg_logits = tf.constant(np.log(np.maximum(
        negative_distribution(t, item_counts), 1e-30)).astype(np.float32)[None, :])
    self.sampler = "uniform" if t.negative_sampler == "uniform" else "unigram"
    self.unigrams = [float(x) for x in np.maximum(item_counts, 1e-3)]
    self.all_ids = tf.range(self.num_items, dtype=tf.int64)
    # The correction the in-batch softmax subtracts: --logq_weight times log Q (Q^w in
    # place of Q); as Q(item) for the per-item softmax and its log for the per-user one.
    self.log_q_correction = t.logq_weight * self.log_q
    self.item_q = tf.exp(self.log_q_correction) if t.logq_correction else None
    self.log_item_q = self.log_q_correction if t.logq_correction else None
    # In-batch softmax over the distinct items of the batch instead of its B columns: the
    # same loss when hits are removed, and cheaper when the corpus is smaller than the
    # batch (MovieLens at batch 8192: 1,682 columns instead of 8,192).
    self.tasks = config_lib.task_names(t)
    self.per_item = ("inbatch_softmax" in self.tasks and t.remove_accidental_hits
                     and self.num_items < t.batch_size and not t.mixed_negatives
                     and not t.num_hard_negatives)
    # When the query of a user does not depend on the example (no history pooled without
    # the positive), each distinct user's row of that softmax is computed once, too.
    self.per_user = (self.per_item and self.query_tower.history is None
                     and not t.id_dropout)
    # Under XLA shapes must be static: the rows of every user instead of the distinct ones
    # (when there are fewer users than a batch), else the plain [B, B] loss (the per-item
    # path's tf.nn.sampled_softmax_loss does not compile).
    self.every_user = t.jit_compile
    if t.jit_compile and not (self.per_user and self.query_tower.num_ids <= t.batch_size):
      self.per_item = self.per_user = False
    if replicas:
      self.per_item = self.per_user = False

  # ---------------------------------------------------------------- named corrections

  def log_q_of(self, items):
    """logQ correction of the given items: float32 [B], or None when it is off."""
    return (tf.gather(self.log_q_correction, items) if self.config.logq_correction
            else None)

  def hit_ids(self, items):
    """Ids for accidental-hit removal: `items`, or None when it is off."""
    return items if self.config.remove_accidental_hits else None

  def each_member(self, loss_fn, *embeddings):
    """loss_fn(*embeddings) with one member, else the mean over the members of loss_fn of
    each member's own columns of `embeddings` (tower outputs, [..., members * w])."""
    if self.members == 1:
      return loss_fn(*embeddings)
    split = [model_lib.member_outputs(e, self.members) for e in embeddings]
    return tf.add_n([loss_fn(*[parts[k] for parts in split])
                     for k in range(self.members)]) / self.members

  def pair_scores(self, q, c):
    """Score of each query with its own item, divided by the temperature: [B]."""
    return tf.reduce_sum(q * c, -1) / self.temperature

  # ---------------------------------------------------------------- the loss

  def __call__(self, batch, step):
    """The loss of one batch (dict of "user", "item", "label", "session": [B])."""
    return self.task_loss(self.config.loss, batch, step)

  def task_losses(self, batch, step):
    """The loss of each head of --tasks on one batch: list of K scalar float32."""
    return [self.task_loss(name, batch, step) for name in self.tasks]

  def task_loss(self, loss, batch, step):
    """The loss named `loss` (one of config.LOSSES) of one batch: scalar float32."""
    t = self.config
    qt, it = self.query_tower, self.item_tower
    users, items = batch["user"], batch["item"]
    if loss == "inbatch_softmax" and self.per_user:
      return self._per_user(users, items)
    # The positive is left out of the user's history (it is the answer).
    exclude = None
    if qt.history is not None:
      exclude = (tf.where(batch["label"] > 0, items, tf.constant(-1, items.dtype))
                 if loss in config_lib.POINTWISE_LOSSES else items)
    drop = (id_dropout_mask(tf.shape(users)[0], t.id_dropout, step, t.seed)
            if t.id_dropout else None)
    q = qt.embed_index(users, exclude, drop)  # [B, D]
    if loss == "inbatch_softmax" and self.per_item:
      return self.each_member(
          lambda q, a: losses.in_batch_softmax_loss_per_item(q, a, items, self.temperature,
                                                             self.item_q),
          q, it.embed_index(self.all_ids))
    if loss == "inbatch_softmax" and t.mixed_negatives:
      return self._mixed(q, items, step)
    if loss == "inbatch_softmax":
      c = it.embed_index(items)  # [B, D]
      if self.replicas:
        return self._gathered(q, c, items)
      return self.each_member(
          lambda q, c: losses.in_batch_softmax_loss(
              q, c, self.temperature, self.log_q_of(items), self.hit_ids(items),
              num_hard_negatives=self.num_hard_negatives), q, c)
    if loss == "info_nce":
      c = it.embed_index(items)
      return self.each_member(
          lambda q, c: losses.info_nce_loss(tf.concat([q, c], 0), self.temperature), q, c)
    if loss == "bce":
      return self._bce(q, it.embed_index(items), step)
    if loss == "sampled_softmax":
      # The item tower over the whole corpus: [num_items, D] (fine up to ~1e5 items).
      return self.each_member(
          lambda q, all_items: losses.sampled_softmax_loss(
              all_items, tf.zeros([self.num_items]), items[:, None], q / self.temperature,
              num_sampled=t.num_negatives, num_classes=self.num_items, sampler=self.sampler,
              unigrams=self.unigrams if self.sampler == "unigram" else None,
              remove_accidental_hits=t.remove_accidental_hits),
          q, it.embed_index(tf.range(self.num_items)))
    # Pointwise heads over labelled (user, item) rows.
    return self.each_member(
        lambda q, c: pointwise_loss(t, loss, batch["label"], self.pair_scores(q, c),
                                    batch["session"]), q, it.embed_index(items))

  def _gathered(self, q, c, items):
    """The in-batch softmax of this replica's queries against the candidates of every
    replica (TFRS `Retrieval` across replicas): its share of the global batch's loss."""
    ctx = tf.distribute.get_replica_context()
    n = ctx.num_replicas_in_sync
    # all_gather needs its inputs placed: with one device per worker
    # MultiWorkerMirroredStrategy sets no device scope ("destinations can not be empty");
    # with several, each replica runs under its device's scope.
    local = ctx.strategy.extended.worker_devices
    if len(local) == 1:
      with tf.device(local[0]):
        c, items = tf.identity(c), tf.identity(items)
    all_c = ctx.all_gather(c, axis=0)          # [n * B, D], replica r's rows at r * B
    all_items = ctx.all_gather(items, axis=0)  # [n * B]
    offset = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * tf.shape(items)[0]
    return self.each_member(
        lambda q, all_c: losses.in_batch_softmax_loss(
            q, all_c, self.temperature, self.log_q_of(all_items), self.hit_ids(all_items),
            query_offset=offset, num_hard_negatives=self.num_hard_negatives), q, all_c) / n

  def _per_user(self, users, items):
    """The in-batch softmax on [distinct users, items] logits (all users under XLA)."""
    if self.every_user:
      distinct, row = tf.range(self.query_tower.num_ids, dtype=users.dtype), tf.cast(
          users, tf.int32)
    else:
      distinct, row = tf.unique(users, out_idx=tf.int32)               # [U], [B]
    q = self.query_tower.embed_index(distinct)                         # [U, D]
    return self.each_member(
        lambda q, a: losses.in_batch_softmax_loss_per_user(q, row, a, items, self.temperature,
                                                           self.log_item_q),
        q, self.item_tower.embed_index(self.all_ids))

  def _mixed(self, q, items, step):
    """In-batch items + `mixed_negatives` uniform items (Yang et al., WWW 2020).

    logQ uses each candidate's expected count under the mixture, E_v = B Q(v) + M / N
    (B in-batch draws from the stream, M uniform draws), for both kinds of column.
    """
    t, it = self.config, self.item_tower
    sampled = mixed_negative_sample(t.mixed_negatives, self.num_items, step, t.seed)  # [M]
    b = tf.cast(tf.shape(items)[0], tf.float32)
    log_e = t.logq_weight * tf.math.log(
        b * tf.exp(self.log_q) + t.mixed_negatives / self.num_items)  # [N]
    use_q = t.logq_correction
    return self.each_member(
        lambda q, c, s: losses.mixed_negatives_softmax_loss(
            q, c, s, self.temperature,
            item_log_q=tf.gather(log_e, items) if use_q else None,
            sampled_log_q=tf.gather(log_e, sampled) if use_q else None,
            item_ids=self.hit_ids(items), sampled_ids=self.hit_ids(sampled)),
        q, it.embed_index(items), it.embed_index(sampled))

  def _bce(self, q, c, step):
    """Sigmoid cross-entropy of each positive and `num_negatives` drawn negatives."""
    t = self.config
    b = tf.shape(q)[0]
    # Negatives per positive: [B, N] item indices.
    seed = tf.stack([tf.cast(step, tf.int32), tf.constant(t.seed, tf.int32)])
    neg = tf.random.stateless_categorical(tf.tile(self.neg_logits, [b, 1]), t.num_negatives,
                                          seed)
    nc = tf.reshape(self.item_tower.embed_index(tf.reshape(neg, [-1])),
                    [b, t.num_negatives, self.item_tower.output_dim])  # [B, N, D]

    def loss_fn(q, c, nc):
      pos_logit = self.pair_scores(q, c)  # [B]
      neg_logit = tf.einsum("bd,bnd->bn", q, nc) / self.temperature  # [B, N]
      return losses.sigmoid_cross_entropy_loss(pos_logit, neg_logit)
    return self.each_member(loss_fn, q, c, nc)


def pointwise_loss(train_config, loss, labels, logit, sessions):
  """A pointwise head's loss on pair scores.

  Args:
    train_config: `TrainConfig` (pos_weight, focal_gamma, focal_alpha, jrc_alpha).
    loss: "weighted_ce", "focal" or "jrc".
    labels: float32 [B] 0/1 labels.
    logit: float32 [B] the pair's score divided by the temperature.
    sessions: int [B] session of each row (jrc).

  Returns:
    Scalar float32, the mean over the batch.
  """
  t = train_config
  if loss == "weighted_ce":
    return losses.weighted_cross_entropy_loss(labels, logit, t.pos_weight)
  if loss == "focal":
    return losses.binary_focal_loss(labels, logit, t.focal_gamma, t.focal_alpha)
  if loss == "jrc":
    two = tf.stack([tf.zeros_like(logit), logit], -1)  # [B, 2]
    return losses.jrc_loss(labels, two, sessions, t.jrc_alpha)
  raise ValueError(f"unknown loss {loss!r}")


class TaskWeights(tf.Module):
  """The weights w [K] of the multi-task loss sum_k w_k L_k (checkpointed with the run).

  Fixed (--task_weights), or Pareto-efficient (--pareto_min_weights): PE-LTR's weights,
  w >= the minimums, sum w = 1, recomputed (`recompute`) from the heads' gradients of the
  shared variables every --pareto_every steps and held in between.

  Args:
    train_config: `TrainConfig` with `tasks` and either `task_weights` or
      `pareto_min_weights` (as `config.resolve` leaves it).
  """

  def __init__(self, train_config):
    super().__init__(name="task_weights")
    t = train_config
    self.names = tuple(t.tasks)
    self.pareto = bool(t.pareto_min_weights)
    self.min_weights = tuple(t.pareto_min_weights)
    if self.pareto:
      slack = max(1.0 - sum(self.min_weights), 0.0)
      initial = [c + slack / len(self.names) for c in self.min_weights]
    else:
      initial = list(t.task_weights)
    # The weight of each head: [K].
    self.weights = tf.Variable(np.asarray(initial, np.float32), trainable=False,
                               name="weights")

  def recompute(self, task_grads, variables):
    """Sets the Pareto weights from the heads' gradients; returns them (float32 [K]).

    Args:
      task_grads: K lists of gradients, each aligned with `variables`.
      variables: the shared variables (every trainable variable of the towers).
    """
    w = losses.pareto_loss_weights(task_grads, variables, self.min_weights)
    self.weights.assign(w)
    return w
