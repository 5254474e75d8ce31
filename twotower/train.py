"""Two-tower training: hand-written tf.function step, summaries, checkpoints, resume.

Layout of a model directory:
  config.json        the resolved `Config` of the run (training/rundir.py)
  lock               held by the training process (training/rundir.py)
  checkpoints/       tf.train.Checkpoint files (towers, optimiser, step); runs made
                     before this name have ckpt/, still read
  train/, eval/      TensorBoard summaries (train/loss, train/learning_rate,
                     train/examples_per_sec, eval/*, hparams); train/ also holds the
                     projector files (item embeddings + titles)
  eval.json          written by `twotower eval`
"""
import contextlib
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_embeddings.data.atomic import atomic_write
from tf_embeddings.data import interactions as ilib
from tf_embeddings.data.errors import UserError
from tf_embeddings.training import distribute
from tf_embeddings.training import rundir as rundir_lib
from tf_embeddings.training.progress import Progress
from tf_embeddings.twotower import config as config_lib
from tf_embeddings.twotower import inputs
from tf_embeddings.twotower import metrics
from tf_embeddings.twotower import model as model_lib

# ----------------------------------------------------------------------------- model


def build_model(config, data, history_from=None, table_scope=contextlib.nullcontext):
  """Builds the `TwoTower` of a `Config` over the vocabularies of `data`.

  Args:
    config: `Config`.
    data: all interactions (vocabularies and side features).
    history_from: the training interactions (positives) whose items form each
      user's history (needed with model.use_history).
    table_scope: context of the embedding tables' creation (`Distribution.tables`).
  """
  m = config.model
  uf = model_lib.feature_tables(data.user_features) if m.use_features else []
  itf = model_lib.feature_tables(data.item_features) if m.use_features else []
  if not m.use_ids and not uf:
    raise UserError("the query tower has no input: --use_ids=false needs user side features")
  if not m.use_ids and not itf:
    raise UserError("the item tower has no input: --use_ids=false needs item side features")
  history = None
  if m.use_history:
    if history_from is None:
      raise ValueError("build_model needs the training interactions for --use_history")
    indptr, indices = ilib.seen_items(history_from)
    history = (indptr, indices, data.num_items)
  query = model_lib.Tower(data.num_users, uf, m.embedding_dim, m.tower_layers, m.use_ids,
                          seed=m.seed * 2 + 1, history=history,
                          bias_column="one" if m.item_bias else None, normalize=m.normalize,
                          name="query_tower", table_scope=table_scope)
  item = model_lib.Tower(data.num_items, itf, m.embedding_dim, m.tower_layers, m.use_ids,
                         seed=m.seed * 2 + 2, bias_column="learned" if m.item_bias else None,
                         normalize=m.normalize, name="item_tower", table_scope=table_scope)
  return model_lib.TwoTower(query, item)


class LinearDecay(keras.optimizers.schedules.LearningRateSchedule):
  """Linear decay from `initial` to `initial * final_fraction` over `total_steps`."""

  def __init__(self, initial, total_steps, final_fraction):
    self.initial = float(initial)
    self.total_steps = max(int(total_steps), 1)
    self.final_fraction = float(final_fraction)

  def __call__(self, step):
    done = tf.minimum(tf.cast(step, tf.float32) / self.total_steps, 1.0)
    return self.initial * (1.0 - (1.0 - self.final_fraction) * done)

  def get_config(self):
    return {"initial": self.initial, "total_steps": self.total_steps,
            "final_fraction": self.final_fraction}


def make_optimizer(train_config, total_steps):
  c = train_config
  schedule = LinearDecay(c.learning_rate, total_steps, c.final_learning_rate_fraction)
  if c.optimizer == "adam" and c.weight_decay:
    # Decoupled weight decay (AdamW): every variable shrinks by lr * weight_decay per step.
    return keras.optimizers.AdamW(schedule, weight_decay=c.weight_decay), schedule
  if c.optimizer == "adam":
    return keras.optimizers.Adam(schedule), schedule
  if c.optimizer == "adagrad":
    return keras.optimizers.Adagrad(schedule), schedule
  return keras.optimizers.SGD(schedule), schedule


# ----------------------------------------------------------------------------- losses


def negative_distribution(train_config, item_counts):
  """Probabilities [num_items] the sampled-negative losses draw from."""
  from tf_embeddings import losses  # pylint: disable=import-outside-toplevel
  n = len(item_counts)
  if train_config.negative_sampler == "uniform":
    return losses.sampler_probabilities("uniform", n)
  return losses.sampler_probabilities("unigram", n, unigrams=np.maximum(item_counts, 1e-3),
                                      distortion=0.75)


def mixed_negative_sample(num, num_items, step, seed):
  """A step's uniformly drawn extra negatives: int64 [num] item indices (with replacement)."""
  seeds = tf.stack([tf.cast(step, tf.int32), tf.constant(seed + 7919, tf.int32)])
  return tf.random.stateless_uniform([num], seeds, 0, num_items, tf.int64)


def make_loss_fn(config, two_tower, item_counts):
  """Returns loss(batch, step) -> scalar for the configured loss.

  Args:
    config: `Config`.
    two_tower: `TwoTower`.
    item_counts: int [num_items] item frequencies in the training stream
      (logQ correction and popularity negatives).
  """
  from tf_embeddings import losses  # pylint: disable=import-outside-toplevel
  t = config.train
  qt, it = two_tower.query_tower, two_tower.item_tower
  num_items = it.num_ids
  temperature = t.temperature
  # log Q(item): the item's share of the training stream, [num_items].
  log_q = tf.constant(np.log(np.maximum(item_counts, 1) / max(item_counts.sum(), 1)),
                      tf.float32)
  neg_logits = tf.constant(np.log(np.maximum(negative_distribution(t, item_counts),
                                             1e-30)).astype(np.float32)[None, :])
  unigrams = [float(x) for x in np.maximum(item_counts, 1e-3)]
  sampler = "uniform" if t.negative_sampler == "uniform" else "unigram"

  # In-batch softmax over the distinct items of the batch instead of its B columns:
  # the same loss when hits are removed, and cheaper when the corpus is smaller
  # than the batch (MovieLens at batch 8192: 1,682 columns instead of 8,192).
  dedup = (t.loss == "inbatch_softmax" and t.remove_accidental_hits
           and num_items < t.batch_size and not t.mixed_negatives)
  all_ids = tf.range(num_items, dtype=tf.int64)
  item_q = tf.exp(log_q) if t.logq_correction else tf.ones([num_items])

  def copies_in_batch(items):
    """n_v: float32 [num_items], how many times each item is a positive of the batch."""
    return tf.math.unsorted_segment_sum(tf.ones_like(items, tf.float32),
                                        tf.cast(items, tf.int32), num_items)

  def inbatch_softmax_by_item(q, items):
    """`losses.in_batch_softmax_loss(q, c, T, log_q[items], items)` computed per item.

    Row i's denominator over the batch is exp(s_ip - lq_p) for its positive p plus
    sum over other items v of n_v * exp(s_iv - lq_v), n_v = copies of v in the
    batch (the positive's copies are accidental hits, removed). That is a sampled
    softmax whose candidates are all items with expected counts Q(v) / n_v
    (items absent from the batch: n_v = 1e-30, i.e. logit - 69) and true
    expected count Q(p), with accidental hits removed.
    """
    counts = copies_in_batch(items)  # [N]
    sampled_values = (all_ids, tf.gather(item_q, items)[:, None],
                      item_q / tf.maximum(counts, 1e-30))
    weights = it.embed_index(all_ids)  # every item: [N, D]
    return losses.sampled_softmax_loss(
        weights, tf.zeros([num_items]), items[:, None], q / temperature,
        num_sampled=num_items, num_classes=num_items, sampled_values=sampled_values,
        remove_accidental_hits=True)

  # When the query of a user does not depend on the example (no history pooled without the
  # positive), each distinct user's row of that softmax is computed once, too.
  dedup_users = dedup and qt.history is None
  # Under XLA shapes must be static: the rows of every user instead of the distinct ones
  # (when there are fewer users than a batch), else the plain [B, B] loss (the per-item
  # path's tf.nn.sampled_softmax_loss does not compile).
  every_user = t.jit_compile
  if t.jit_compile and not (dedup_users and qt.num_ids <= t.batch_size):
    dedup = dedup_users = False
  log_item_q = tf.math.log(item_q)

  def inbatch_softmax_by_user_and_item(users, items):
    """`inbatch_softmax_by_item` computed on [distinct users, items] logits.

    With x_uv = q_u . c_v / T - log Q(v) and A_u = sum_v n_v exp(x_uv), row i (user u,
    positive p) has denominator exp(x_up) + sum_{v != p} n_v exp(x_uv)
    = A_u - (n_p - 1) exp(x_up), so loss_i = log A_u + log1p(-(n_p - 1) exp(x_up - log A_u))
    - x_up, where (n_p - 1) exp(x_up - log A_u) <= (n_p - 1) / n_p < 1. MovieLens-100K at
    batch 8192: 943 x 1,682 logits instead of 8,192 x 1,682.
    """
    if every_user:
      distinct, row = tf.range(qt.num_ids, dtype=users.dtype), tf.cast(users, tf.int32)
    else:
      distinct, row = tf.unique(users, out_idx=tf.int32)               # [U], [B]
    q = qt.embed_index(distinct)                                       # [U, D]
    counts = copies_in_batch(items)                                    # [N]
    x = tf.matmul(q, it.embed_index(all_ids), transpose_b=True) / temperature - log_item_q
    # Items absent from the batch are no candidates (a constant -1e30, not log 0, so that
    # no gradient is NaN).
    log_counts = tf.where(counts > 0, tf.math.log(tf.maximum(counts, 1.0)), -1e30)
    log_a = tf.reduce_logsumexp(x + log_counts, axis=1)                # [U]
    items32 = tf.cast(items, tf.int32)
    x_pos = tf.gather_nd(x, tf.stack([row, items32], 1))              # [B]
    log_a_row = tf.gather(log_a, row)
    ratio = (tf.gather(counts, items32) - 1.0) * tf.exp(x_pos - log_a_row)
    return tf.reduce_mean(log_a_row + tf.math.log1p(-ratio) - x_pos)

  def mixed_softmax(q, items, step):
    """In-batch items + `mixed_negatives` uniform items (Yang et al., WWW 2020).

    logQ uses each candidate's expected count under the mixture, E_v = B Q(v) + M / N
    (B in-batch draws from the stream, M uniform draws), for both kinds of column.
    """
    sampled = mixed_negative_sample(t.mixed_negatives, num_items, step, t.seed)  # [M]
    b = tf.cast(tf.shape(items)[0], tf.float32)
    log_e = tf.math.log(b * tf.exp(log_q) + t.mixed_negatives / num_items)  # [N]
    use_q = t.logq_correction
    return losses.mixed_negatives_softmax_loss(
        q, it.embed_index(items), it.embed_index(sampled), temperature,
        item_log_q=tf.gather(log_e, items) if use_q else None,
        sampled_log_q=tf.gather(log_e, sampled) if use_q else None,
        item_ids=items if t.remove_accidental_hits else None,
        sampled_ids=sampled if t.remove_accidental_hits else None)

  def loss_fn(batch, step):
    users, items = batch["user"], batch["item"]
    if t.loss == "inbatch_softmax" and dedup_users:
      return inbatch_softmax_by_user_and_item(users, items)
    # The positive is left out of the user's history (it is the answer).
    exclude = None
    if qt.history is not None:
      exclude = (tf.where(batch["label"] > 0, items, tf.constant(-1, items.dtype))
                 if t.loss in config_lib.POINTWISE_LOSSES else items)
    q = qt.embed_index(users, exclude)  # [B, D]
    if t.loss == "inbatch_softmax" and dedup:
      return inbatch_softmax_by_item(q, items)
    if t.loss == "inbatch_softmax" and t.mixed_negatives:
      return mixed_softmax(q, items, step)
    if t.loss == "inbatch_softmax":
      c = it.embed_index(items)  # [B, D]
      return losses.in_batch_softmax_loss(
          q, c, temperature,
          item_log_q=tf.gather(log_q, items) if t.logq_correction else None,
          item_ids=items if t.remove_accidental_hits else None)
    if t.loss == "info_nce":
      c = it.embed_index(items)
      return losses.info_nce_loss(tf.concat([q, c], 0), temperature)
    if t.loss == "bce":
      c = it.embed_index(items)
      b = tf.shape(users)[0]
      # Negatives per positive: [B, N] item indices.
      seed = tf.stack([tf.cast(step, tf.int32), tf.constant(t.seed, tf.int32)])
      neg = tf.random.stateless_categorical(tf.tile(neg_logits, [b, 1]), t.num_negatives,
                                            seed)
      nc = tf.reshape(it.embed_index(tf.reshape(neg, [-1])), [b, t.num_negatives, -1])
      pos_logit = tf.reduce_sum(q * c, -1) / temperature  # [B]
      neg_logit = tf.einsum("bd,bnd->bn", q, nc) / temperature  # [B, N]
      return losses.sigmoid_cross_entropy_loss(pos_logit, neg_logit)
    if t.loss == "sampled_softmax":
      # The item tower over the whole corpus: [num_items, D] (fine up to ~1e5 items).
      all_items = it.embed_index(tf.range(num_items))
      return losses.sampled_softmax_loss(
          all_items, tf.zeros([num_items]), items[:, None], q / temperature,
          num_sampled=t.num_negatives, num_classes=num_items, sampler=sampler,
          unigrams=unigrams if sampler == "unigram" else None,
          remove_accidental_hits=t.remove_accidental_hits)
    # Pointwise heads over labelled (user, item) rows.
    c = it.embed_index(items)
    logit = tf.reduce_sum(q * c, -1) / temperature  # [B]
    labels = batch["label"]
    if t.loss == "weighted_ce":
      return losses.weighted_cross_entropy_loss(labels, logit, t.pos_weight)
    if t.loss == "focal":
      return losses.binary_focal_loss(labels, logit, t.focal_gamma, t.focal_alpha)
    if t.loss == "jrc":
      two = tf.stack([tf.zeros_like(logit), logit], -1)  # [B, 2]
      return losses.jrc_loss(labels, two, batch["session"], t.jrc_alpha)
    raise ValueError(f"unknown loss {t.loss!r}")

  return loss_fn


# ----------------------------------------------------------------------------- run dir


# Settings that may change when a run is resumed (they do not change what was learned so
# far: cadences, evaluation settings, where the data files are; more epochs extend the run).
FREE_FIELDS = ("model_dir", "data.data_dir", "train.epochs", "train.checkpoint_every",
               "train.log_every", "train.eval_every_epoch", "train.include_seen")
# The run's own files: what --resume=false removes (nothing else in the directory).
RUN_FILES = (rundir_lib.CHECKPOINT_DIR, *rundir_lib.OLD_CHECKPOINT_DIRS, "train", "eval",
             "projector", "projector_config.pbtxt", "eval.json", rundir_lib.CONFIG_FILE)
# config.json key: shards per table of a run trained on parameter servers (absent: 1).
TABLE_SHARDS_KEY = "table_shards"
# Flag of a config field where it is not the field's name.
_FLAGS = {"model.seed": "model_seed"}


def run_dir(model_dir):
  return rundir_lib.RunDir(
      model_dir, config_lib.Config, free=FREE_FIELDS, monotone=("train.epochs",),
      flag_name=lambda key: _FLAGS.get(key, key.rsplit(".", 1)[-1]))


def read_config(model_dir):
  """The `Config` of a run directory (UserError if there is none)."""
  return run_dir(model_dir).load_config(
      what="two-tower run", hint="train first with `twotower train --model_dir=...`")


class WeightAverage(tf.Module):
  """Exponential moving average of the towers' variables (Polyak averaging), debiased.

  After step t: shadow = momentum * shadow + (1 - momentum) * variable, from shadow = 0,
  and the average is shadow / (1 - momentum^t) (Adam's bias correction), so the random
  initial weights never weigh in, however short the run. Evaluation during training uses
  the average (`swapped`); at the end of training it replaces the variables (`commit`),
  so the last checkpoint, `twotower eval` and the export hold the averaged towers.
  """

  def __init__(self, variables, momentum):
    super().__init__(name="weight_average")
    self.momentum = float(momentum)
    self.targets = list(variables)
    self.shadow = [tf.Variable(tf.zeros_like(v), trainable=False, name=f"avg_{k}")
                   for k, v in enumerate(self.targets)]
    self.updates = tf.Variable(0.0, trainable=False, name="updates")

  def update(self):
    self.updates.assign_add(1.0)
    for s, v in zip(self.shadow, self.targets):
      s.assign(self.momentum * s + (1.0 - self.momentum) * v)

  def averages(self):
    """The debiased averages (the variables themselves before any update)."""
    if float(self.updates.numpy()) == 0.0:
      return [tf.identity(v) for v in self.targets]
    correction = 1.0 - self.momentum ** self.updates
    return [s / correction for s in self.shadow]

  def commit(self):
    for v, a in zip(self.targets, self.averages()):
      v.assign(a)

  @contextlib.contextmanager
  def swapped(self):
    """The averaged weights in the variables for the duration of the block."""
    saved = [tf.identity(v) for v in self.targets]
    self.commit()
    try:
      yield
    finally:
      for v, x in zip(self.targets, saved):
        v.assign(x)


def make_checkpoint(two_tower, optimizer=None, average=None):
  step = tf.Variable(0, dtype=tf.int64, name="step", trainable=False)
  kw = {"query_tower": two_tower.query_tower, "item_tower": two_tower.item_tower, "step": step}
  if optimizer is not None:
    kw["optimizer"] = optimizer
  if average is not None:
    kw["weight_average"] = average
  return tf.train.Checkpoint(**kw), step


def restore(model_dir):
  """Rebuilds the towers of a finished (or interrupted) run from its last checkpoint.

  Returns:
    (config, prepared, two_tower).
  """
  config = read_config(model_dir)
  prepared = inputs.prepare(config.data, config.train.loss in config_lib.POINTWISE_LOSSES)
  two_tower = build_model(config, prepared.data, history_source(prepared))
  ckpt, step = make_checkpoint(two_tower)
  latest = run_dir(model_dir).latest_checkpoint()
  if latest is None:
    raise UserError(f"{model_dir!r} has no checkpoint yet: train first")
  ckpt.restore(latest).expect_partial()
  logging.info("restored %s (step %d)", latest, int(step.numpy()))
  return config, prepared, two_tower


# ----------------------------------------------------------------------------- eval


def evaluate(two_tower, prepared, split="test", include_seen=False, temperature=1.0):
  """Full-corpus metrics of the towers on one split (see twotower/metrics.py)."""
  data, seen = prepared.eval_split(split)
  query = two_tower.query_tower.embed_all()
  items = two_tower.item_tower.embed_all()
  return metrics.evaluate(query, items, data.users, data.items,
                          None if include_seen else seen, temperature)


def evaluate_both(two_tower, prepared, split="test", temperature=1.0):
  """{'seen_excluded': {...}, 'seen_included': {...}} for one split."""
  data, seen = prepared.eval_split(split)
  query = two_tower.query_tower.embed_all()
  items = two_tower.item_tower.embed_all()
  out = {}
  for name, exclude in (("seen_excluded", seen), ("seen_included", None)):
    out[name] = metrics.evaluate(query, items, data.users, data.items, exclude, temperature)
  return out


# ----------------------------------------------------------------------------- train


def _validate(config, prepared):
  t = config.train
  n_items = prepared.data.num_items
  if t.loss in ("bce", "sampled_softmax") and t.num_negatives >= n_items:
    raise UserError(f"--num_negatives={t.num_negatives} is not below the number of items "
                    f"({n_items}): use fewer negatives")
  if len(prepared.train) < t.batch_size and t.loss in ("inbatch_softmax", "info_nce"):
    raise UserError(f"--batch_size={t.batch_size} exceeds the {len(prepared.train)} training "
                    "interactions: use a smaller batch")


def train(config, prepared=None, resume=True, stats=None, dist=None):
  """Trains (or resumes) the run described by `config`.

  Args:
    config: `Config`.
    prepared: `inputs.Prepared` (default: built from config.data).
    resume: continue from the last checkpoint of model_dir if any.
    stats: optional dict, filled with "examples_per_sec" (train steps only,
      from the end of the first step: no tracing, no evaluation) and "steps".
    dist: `training.distribute.Distribution` (default: one process). Under
      parameter_server the tables are sharded over the parameter servers and the workers
      run the steps; the checkpoints are the same as a single process's.

  Returns:
    (two_tower, last eval metrics dict or {}).
  """
  with run_dir(config.model_dir).training() as rundir:
    return _train(config, rundir, prepared, resume, stats, dist or distribute.default())


def _train(config, rundir, prepared, resume, stats, dist):
  t = config.train
  pointwise = t.loss in config_lib.POINTWISE_LOSSES
  has_checkpoint = rundir.prepare_train(config, resume, RUN_FILES)
  if prepared is None:
    prepared = inputs.prepare(config.data, pointwise)
  _validate(config, prepared)
  train_data = prepared.train
  drop = t.loss in ("inbatch_softmax", "info_nce")
  steps_per_epoch = (len(train_data) // t.batch_size if drop
                     else -(-len(train_data) // t.batch_size))
  total_steps = max(steps_per_epoch * t.epochs, 1)
  if dist.coordinator is not None and t.average_momentum:
    raise UserError("--average_momentum (weight averaging) does not run on parameter-server "
                    "clusters yet: pass --average_momentum=0 with --strategy="
                    "parameter_server")
  with dist.scope():
    two_tower = build_model(config, prepared.data, history_source(prepared), dist.tables)
    optimizer, schedule = make_optimizer(t, total_steps)
    variables = list(two_tower.trainable_variables)
    optimizer.build(variables)
    average = WeightAverage(variables, t.average_momentum) if t.average_momentum else None
    ckpt, step_var = make_checkpoint(two_tower, optimizer, average)
  manager = rundir.checkpoint_manager(ckpt)
  # The optimizer's state is saved per table shard: a run resumes only in its own layout.
  recorded = (rundir.load_raw() or {}).get(TABLE_SHARDS_KEY, 1) if has_checkpoint else None
  if recorded is not None and recorded != dist.table_shards:
    now = ("in one process (whole tables)" if dist.table_shards == 1
           else f"with tables in {dist.table_shards} shards")
    raise UserError(f"--model_dir={config.model_dir} was trained with its tables in "
                    f"{recorded} shard{'s' if recorded > 1 else ''} and this train runs {now}: "
                    "resume it with the same --strategy and --num_ps_shards (or number of "
                    "parameter servers), or --resume=false; eval and export read it in one "
                    "process")
  if has_checkpoint and manager.latest_checkpoint:
    ckpt.restore(manager.latest_checkpoint)
    logging.info("resuming from %s at step %d", manager.latest_checkpoint,
                 int(step_var.numpy()))
  # Recorded once the run is known to be compatible; nothing trained yet: as is.
  rundir.save_config(config, step=int(step_var.numpy()), fresh=not has_checkpoint,
                     extra={TABLE_SHARDS_KEY: dist.table_shards} if dist.distributed else None)
  item_counts = positives_counts(train_data)
  loss_fn = make_loss_fn(config, two_tower, item_counts)

  def step_fn(batch):
    with tf.GradientTape() as tape:
      loss = loss_fn(batch, step_var)
    grads = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(grads, variables))
    if average is not None:
      average.update()
    # On a cluster the workers' increments race (and a retried step counts twice): the
    # chief sets the count it scheduled at every join; in between it seeds the negatives.
    step_var.assign_add(1)
    return loss

  if dist.coordinator is not None:
    if t.jit_compile:
      raise UserError("--jit_compile does not run on parameter-server workers (TensorFlow "
                      "cannot schedule an XLA function there): leave it off")
    return _train_on_cluster(config, rundir, prepared, stats, dist, two_tower, step_fn,
                             step_var, schedule, manager, steps_per_epoch, total_steps, drop)
  train_step = tf.function(step_fn, autograph=False, jit_compile=t.jit_compile)

  train_writer = rundir.summary_writer(rundir_lib.TRAIN_LOGS)
  eval_writer = rundir.summary_writer(rundir_lib.EVAL_LOGS)
  loss_mean = tf.keras.metrics.Mean("loss")
  start_step = int(step_var.numpy())
  progress = Progress(total_steps * t.batch_size, unit="examples", label="train")
  progress.update(start_step * t.batch_size)
  last_eval = {}
  window_start, window_examples = time.monotonic(), 0
  step = start_step
  busy, busy_examples = 0.0, 0
  for epoch in range(start_step // max(steps_per_epoch, 1), t.epochs):
    skip = step - epoch * steps_per_epoch
    tick = time.monotonic()
    for batch in inputs.epoch_dataset(train_data, t.batch_size, epoch, t.seed, skip, drop):
      loss = train_step(batch)
      loss_mean.update_state(loss)
      step += 1
      n = int(batch["user"].shape[0])
      window_examples += n
      if step % t.log_every == 0 or step == total_steps:
        now = time.monotonic()
        rate = window_examples / max(now - window_start, 1e-9)
        window_start, window_examples = now, 0
        value = float(loss_mean.result())
        if not np.isfinite(value):
          raise UserError(f"the loss became {value} at step {step}: lower --learning_rate or "
                          "raise --temperature")
        with train_writer.as_default(step=step):
          tf.summary.scalar("train/loss", value)
          tf.summary.scalar("train/learning_rate", float(schedule(step)))
          tf.summary.scalar("train/examples_per_sec", rate)
        loss_mean.reset_state()
        progress.update(step * t.batch_size, loss=value)
      if step > start_step + 1:  # the first step traces the function
        # Steady-state rate: data, step, summaries and progress line; no checkpoints.
        busy_examples += n
        busy += time.monotonic() - tick
      tick = time.monotonic()
      if step % t.checkpoint_every == 0:
        manager.save(checkpoint_number=step)
        tick = time.monotonic()
    if t.eval_every_epoch or epoch == t.epochs - 1:
      with average.swapped() if average is not None else contextlib.nullcontext():
        last_eval = _epoch_eval(config, prepared, two_tower, eval_writer, step, epoch)
  if average is not None:
    average.commit()
  manager.save(checkpoint_number=step)
  progress.update(step * t.batch_size, force=True)
  if stats is not None:
    stats["examples_per_sec"] = busy_examples / busy if busy > 0 else float("nan")
    stats["steps"] = step - start_step
  _finish(config, prepared, two_tower, train_writer, eval_writer, last_eval)
  return two_tower, last_eval


def _epoch_eval(config, prepared, two_tower, eval_writer, step, epoch):
  """The full-corpus evaluation after an epoch: summaries and a log line; returns both."""
  t = config.train
  split = "validation" if prepared.valid is not None else "test"
  both = evaluate_both(two_tower, prepared, split, t.temperature)
  main = both["seen_included" if t.include_seen else "seen_excluded"]
  with eval_writer.as_default(step=step):
    for k, v in main.items():
      tf.summary.scalar(f"eval/{k}", v)
    for k, v in both["seen_included" if not t.include_seen else "seen_excluded"].items():
      tf.summary.scalar(f"eval_{'seen_included' if not t.include_seen else 'seen_excluded'}"
                        f"/{k}", v)
  logging.info("epoch %d (%s): hit@10 %.4f hit@100 %.4f ndcg@10 %.4f mrr %.4f | seen "
               "included hit@100 %.4f", epoch + 1, split, main["hit@10"], main["hit@100"],
               main["ndcg@10"], main["mrr"], both["seen_included"]["hit@100"])
  return both


def _finish(config, prepared, two_tower, train_writer, eval_writer, last_eval):
  write_hparams(config, train_writer, last_eval)
  write_projector(config.model_dir, two_tower, prepared.data)
  train_writer.flush()
  eval_writer.flush()


def _train_on_cluster(config, rundir, prepared, stats, dist, two_tower, step_fn, step_var,
                      schedule, manager, steps_per_epoch, total_steps, drop):
  """The loop of --strategy=parameter_server: this process (the chief) schedules steps that
  the workers run asynchronously on their own copy of the training split, and joins them
  at every log, checkpoint and epoch boundary (summaries, checkpoints and the evaluation
  run here, reading the sharded tables from the parameter servers)."""
  t = config.train
  strategy, coordinator = dist.strategy, dist.coordinator
  train_data = prepared.train
  per_worker = coordinator.create_per_worker_dataset(
      lambda: inputs.worker_dataset(train_data, t.batch_size, drop))
  iterator = iter(per_worker)

  @tf.function(autograph=False)
  def worker_step(it):
    return strategy.run(step_fn, args=(next(it),))

  train_writer = rundir.summary_writer(rundir_lib.TRAIN_LOGS)
  eval_writer = rundir.summary_writer(rundir_lib.EVAL_LOGS)
  start_step = step = int(step_var.numpy())
  progress = Progress(total_steps * t.batch_size, unit="examples", label="train")
  progress.update(start_step * t.batch_size)
  last_eval = {}
  busy, busy_steps = 0.0, 0
  while step < total_steps:
    boundaries = [total_steps, (step // steps_per_epoch + 1) * steps_per_epoch]
    boundaries += [(step // every + 1) * every for every in (t.log_every, t.checkpoint_every)]
    until = min(boundaries)
    tick = time.monotonic()
    results = [coordinator.schedule(worker_step, args=(iterator,))
               for _ in range(until - step)]
    coordinator.join()
    losses_ = [float(r.fetch()) for r in results]
    if step > start_step:  # the first window traces and registers the function on workers
      busy += time.monotonic() - tick
      busy_steps += until - step
    step = until
    step_var.assign(step)
    value = float(np.mean(losses_))
    if not np.isfinite(value):
      raise UserError(f"the loss became {value} at step {step}: lower --learning_rate or "
                      "raise --temperature")
    rate = busy_steps * t.batch_size / busy if busy > 0 else 0.0
    with train_writer.as_default(step=step):
      tf.summary.scalar("train/loss", value)
      tf.summary.scalar("train/learning_rate", float(schedule(step)))
      if rate:
        tf.summary.scalar("train/examples_per_sec", rate)
    progress.update(step * t.batch_size, loss=value)
    if step % t.checkpoint_every == 0:
      manager.save(checkpoint_number=step)
    if step % steps_per_epoch == 0 or step == total_steps:
      epoch = (step - 1) // steps_per_epoch
      if t.eval_every_epoch or step == total_steps:
        last_eval = _epoch_eval(config, prepared, two_tower, eval_writer, step, epoch)
  manager.save(checkpoint_number=step)
  progress.update(step * t.batch_size, force=True)
  if stats is not None:
    stats["examples_per_sec"] = busy_steps * t.batch_size / busy if busy > 0 else float("nan")
    stats["steps"] = step - start_step
  _finish(config, prepared, two_tower, train_writer, eval_writer, last_eval)
  return two_tower, last_eval


def history_source(prepared):
  """The interactions that form users' histories: the positives of the train split."""
  return inputs.positives_only(prepared.train)


def positives_counts(train_data):
  """Item frequencies of the positive training stream: int64 [num_items]."""
  if train_data.labels is not None and train_data.binary_labels:
    keep = train_data.labels > 0
    return np.bincount(train_data.items[keep], minlength=train_data.num_items)
  return train_data.item_counts()


def write_hparams(config, writer, last_eval):
  """Logs the hyper-parameters (HParams plugin and text) and the last evaluation's figures."""
  run_dir(config.model_dir).write_hparams(writer, config,
                                          metrics=last_eval.get("seen_excluded", {}))


def write_projector(model_dir, two_tower, data):
  """Item embeddings + titles for the TensorBoard Projector (RunDir.write_projector)."""
  emb = two_tower.item_tower.embed_all()
  ids = [str(x) for x in data.item_ids]
  run_dir(model_dir).write_projector(ids, emb, tensor_name="item_embeddings",
                                     columns={"item_id": ids, "title": data.item_titles or ids})


def write_metadata(path, data):
  """Projector metadata: header `item_id<TAB>title`, one row per item."""
  clean = lambda s: str(s).replace("\t", " ").replace("\n", " ")
  titles = data.item_titles or [str(x) for x in data.item_ids]
  with atomic_write(path) as f:
    f.write("item_id\ttitle\n")
    for iid, title in zip(data.item_ids, titles):
      f.write(f"{clean(iid)}\t{clean(title)}\n")
