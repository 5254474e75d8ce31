"""Two-tower training, the loop only: hand-written tf.function step (the loss is
twotower/objective.py's), summaries, checkpoints, resume, and the parameter-server
scheduling of --strategy=parameter_server.

Layout of a model directory:
  config.json        the resolved `Config` of the run (training/rundir.py)
  lock               held by the training process (training/rundir.py)
  checkpoints/       tf.train.Checkpoint files (towers, optimiser, step); runs made
                     before this name have ckpt/, still read
  train/, eval/      TensorBoard summaries (train/loss, train/learning_rate,
                     train/examples_per_sec, eval/*, hparams; with --tasks also
                     train/task_loss/<task>, train/task_weight/<task> and
                     eval/<task>/auc, eval/<task>/logloss); train/ also holds the
                     projector files (item embeddings + titles)
  tables.npz         id vocabularies, side-feature tables, item titles (and users'
                     histories with --use_history): what `twotower export` builds from
                     (twotower/inputs.py save_tables)
  train_split.bin    the training split as fixed-size records, written under
                     --strategy=parameter_server --cluster_input=workers (each worker
                     reads its share: inputs.worker_dataset_from_file)
  eval.json          written by `twotower eval`
"""
import contextlib
import dataclasses
import functools
import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_embeddings.data.errors import UserError
from tf_embeddings.training import distribute
from tf_embeddings.training import rundir as rundir_lib
from tf_embeddings.training.lazy_adam import LazyAdam
from tf_embeddings.training.progress import Progress
from tf_embeddings.twotower import config as config_lib
from tf_embeddings.twotower import evaluate as evaluate_lib
from tf_embeddings.twotower import inputs
from tf_embeddings.twotower import model as model_lib
from tf_embeddings.twotower import objective as objective_lib

# ----------------------------------------------------------------------------- optimiser


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
  if c.optimizer == "lazy_adam":
    return LazyAdam(schedule, weight_decay=c.weight_decay or None), schedule
  if c.optimizer == "adagrad":
    return keras.optimizers.Adagrad(schedule), schedule
  return keras.optimizers.SGD(schedule), schedule


# ----------------------------------------------------------------------------- run dir


# The run's own files: what --resume=false removes (nothing else in the directory).
RUN_FILES = (rundir_lib.CHECKPOINT_DIR, *rundir_lib.OLD_CHECKPOINT_DIRS, "train", "eval",
             "projector", "projector_config.pbtxt", "eval.json", rundir_lib.CONFIG_FILE)
RUN_FILES += (inputs.TABLES_FILE, inputs.WORKER_SPLIT_FILE)
# config.json key: shards per table of a run trained on parameter servers (absent: 1).
TABLE_SHARDS_KEY = "table_shards"


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


# ----------------------------------------------------------------------------- train


def _validate(config, prepared):
  t = config.train
  n_items = prepared.data.num_items
  tasks = config_lib.task_names(t)
  if {"bce", "sampled_softmax"} & set(tasks) and t.num_negatives >= n_items:
    raise UserError(f"--num_negatives={t.num_negatives} is not below the number of items "
                    f"({n_items}): use fewer negatives")
  if len(prepared.train) < t.batch_size and {"inbatch_softmax", "info_nce"} & set(tasks):
    raise UserError(f"--batch_size={t.batch_size} exceeds the {len(prepared.train)} training "
                    "interactions: use a smaller batch")


def train(config, prepared=None, resume=True, stats=None, dist=None,
          cluster_input="coordinator"):
  """Trains (or resumes) the run described by `config`.

  Args:
    config: `Config`.
    prepared: `inputs.Prepared` (default: built from config.data).
    resume: continue from the last checkpoint of model_dir if any.
    stats: optional dict, filled with "examples_per_sec" (train steps only,
      from the end of the first step: no tracing, no evaluation) and "steps".
    dist: `training.distribute.Distribution` (default: one process). Under
      parameter_server the tables are sharded over the parameter servers and the workers
      run the steps; the checkpoints are the same as a single process's. Under
      multi_worker and mirrored every replica trains on its slice of each batch; a
      non-chief worker writes to a temporary directory it removes (TensorFlow's pattern)
      and starts from the chief's state.
    cluster_input: parameter_server: "coordinator" (the training split inside every
      worker's dataset) or "workers" (each worker reads its share of the run directory's
      inputs.WORKER_SPLIT_FILE).

  Returns:
    (two_tower, last eval metrics dict or {}).
  """
  dist = dist or distribute.default()
  if not dist.is_chief:
    scratch = tempfile.mkdtemp(prefix="twotower-worker-")
    try:
      config = dataclasses.replace(config, model_dir=scratch)
      with config_lib.run_dir(scratch).training() as rundir:
        return _train(config, rundir, prepared, False, stats, dist, cluster_input)
    finally:
      shutil.rmtree(scratch, ignore_errors=True)
  with config_lib.run_dir(config.model_dir).training() as rundir:
    return _train(config, rundir, prepared, resume, stats, dist, cluster_input)


def _check_replicated(config, dist):
  """UserError for what synchronous replicas (multi_worker, mirrored) do not run."""
  t = config.train
  if t.loss != "inbatch_softmax" or t.mixed_negatives:
    raise UserError(f"--strategy={dist.kind} trains --loss=inbatch_softmax without "
                    "--mixed_negatives only (its candidates are gathered from every "
                    f"replica); --loss={t.loss}"
                    f"{' with --mixed_negatives' if t.mixed_negatives else ''} is not built "
                    "for replicas: use --strategy=default or parameter_server")
  if t.jit_compile:
    raise UserError(f"--jit_compile does not run under --strategy={dist.kind} yet: leave it "
                    "off")
  if t.tasks or t.id_dropout:
    flag = "--tasks" if t.tasks else "--id_dropout"
    raise UserError(f"{flag} does not run under --strategy={dist.kind} yet: use "
                    "--strategy=default")
  n = dist.strategy.num_replicas_in_sync
  if t.batch_size % n:
    raise UserError(f"--batch_size={t.batch_size} does not split over the {n} replicas of "
                    f"--strategy={dist.kind}: use a multiple of {n} (it is the global batch)")


def _sync_from_chief(strategy, variables):
  """Every worker takes the chief's values of `variables` (after the chief restored a
  checkpoint that the other workers never read): one all-reduce of the chief's values."""
  # Keras variables (the optimizer's) wrap a tf.Variable: sync that one.
  variables = [v.value if isinstance(v, keras.Variable) else v for v in variables]
  variables = list({id(v): v for v in variables}.values())

  @tf.function(autograph=False)
  def gather():
    def replica_fn():
      ctx = tf.distribute.get_replica_context()
      first = tf.equal(ctx.replica_id_in_sync_group, 0)
      mine = [tf.where(first, tf.cast(v, tf.float64), tf.zeros(v.shape, tf.float64))
              for v in variables]
      return ctx.all_reduce(tf.distribute.ReduceOp.SUM, mine)
    return strategy.run(replica_fn)

  values = gather()
  for v, x in zip(variables, values):
    v.assign(tf.cast(strategy.experimental_local_results(x)[0], v.dtype))


def _replicated_step(strategy, replica_fn, batch_size, after=None):
  """The train step of synchronous replicas: a global batch of `batch_size` rows -> each
  replica its slice (`replica_fn` returns its share of the loss), then `after()` once in
  cross-replica context; returns the global batch's loss."""
  n = strategy.num_replicas_in_sync
  b = batch_size // n

  @tf.function(autograph=False)
  def step(per_replica):
    shares = strategy.run(replica_fn, args=(per_replica,))
    if after is not None:
      after()
    return strategy.reduce(tf.distribute.ReduceOp.SUM, shares, axis=None)

  def run(batch):
    def value_fn(ctx):
      r = ctx.replica_id_in_sync_group
      return {k: v[r * b:(r + 1) * b] for k, v in batch.items()}
    return step(strategy.experimental_distribute_values_from_function(value_fn))

  return run


def _train(config, rundir, prepared, resume, stats, dist, cluster_input):
  t = config.train
  pointwise = config_lib.labelled(t)
  if dist.replicated:
    _check_replicated(config, dist)
  has_checkpoint = rundir.prepare_train(config, resume, RUN_FILES)
  if prepared is None:
    prepared = inputs.prepare(config.data, pointwise, seen_every_row=bool(t.tasks))
  _validate(config, prepared)
  train_data = prepared.train
  drop = bool({"inbatch_softmax", "info_nce"} & set(config_lib.task_names(t)))
  steps_per_epoch = (len(train_data) // t.batch_size if drop
                     else -(-len(train_data) // t.batch_size))
  total_steps = max(steps_per_epoch * t.epochs, 1)
  if dist.coordinator is not None and t.average_momentum:
    raise UserError("--average_momentum (weight averaging) does not run on parameter-server "
                    "clusters yet: pass --average_momentum=0 with --strategy="
                    "parameter_server")
  if dist.coordinator is not None and t.tasks:
    raise UserError("--tasks (multi-task heads) does not run on parameter-server clusters "
                    "yet: train it in one process")
  with dist.scope():
    history = inputs.history(prepared) if config.model.use_history else None
    two_tower = model_lib.build_model(config, prepared.data, history, dist.tables)
    optimizer, schedule = make_optimizer(t, total_steps)
    variables = list(two_tower.trainable_variables)
    optimizer.build(variables)
    average = WeightAverage(variables, t.average_momentum) if t.average_momentum else None
    task_weights = objective_lib.TaskWeights(t) if t.tasks else None
    ckpt, step_var = model_lib.make_checkpoint(two_tower, optimizer, average, task_weights)
  manager = rundir.checkpoint_manager(ckpt)
  # The optimizer's state is saved per table shard: a run resumed in another layout gets
  # it re-split (`restore_into_layout`).
  recorded = (rundir.load_raw() or {}).get(TABLE_SHARDS_KEY, 1) if has_checkpoint else None
  if has_checkpoint and manager.latest_checkpoint:
    if recorded != dist.table_shards:
      restore_into_layout(manager.latest_checkpoint, two_tower, optimizer, variables,
                          step_var, average, task_weights)
      logging.info("the optimizer's state of %s re-split from tables in %d shard(s) into %d",
                   manager.latest_checkpoint, recorded, dist.table_shards)
    else:
      ckpt.restore(manager.latest_checkpoint)
    logging.info("resuming from %s at step %d", manager.latest_checkpoint,
                 int(step_var.numpy()))
  # Recorded once the run is known to be compatible; nothing trained yet: as is.
  rundir.save_config(config, step=int(step_var.numpy()), fresh=not has_checkpoint,
                     extra={TABLE_SHARDS_KEY: dist.table_shards}
                     if dist.distributed or (recorded or 1) != 1 else None)
  # What the export builds from: the towers' vocabularies and tables (rewritten on resume:
  # the same data, as the recorded config).
  inputs.save_tables(rundir.file(inputs.TABLES_FILE), prepared.data, history)
  if dist.kind == "multi_worker":
    _sync_from_chief(dist.strategy, [*two_tower.variables, *optimizer.variables, step_var,
                                     *(average.variables if average is not None else ())])
  # Retrieval heads of --tasks train on every row, labelled 0 or 1: logQ counts every row.
  counts = train_data.item_counts() if t.tasks else positives_counts(train_data)
  loss_fn = objective_lib.Objective(t, two_tower, counts, replicas=dist.replicated)

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
                             step_var, schedule, manager, steps_per_epoch, total_steps, drop,
                             cluster_input)
  if dist.replicated:
    def replica_fn(batch):
      with tf.GradientTape() as tape:
        loss = loss_fn(batch, step_var)  # this replica's share of the batch's loss
      grads = tape.gradient(loss, variables)
      optimizer.apply_gradients(zip(grads, variables))  # summed over the replicas
      return loss

    def after():
      if average is not None:
        average.update()
      step_var.assign_add(1)

    train_step = _replicated_step(dist.strategy, replica_fn, t.batch_size, after)
  else:
    train_step = tf.function(step_fn, autograph=False, jit_compile=t.jit_compile)
  if task_weights is not None:
    def multi_step_fn(batch, recompute):
      return _multi_task_step(batch, loss_fn, task_weights, variables, optimizer, average,
                              step_var, recompute)
    train_step = tf.function(functools.partial(multi_step_fn, recompute=False),
                             autograph=False, jit_compile=t.jit_compile)
    pareto_step = tf.function(functools.partial(multi_step_fn, recompute=True),
                              autograph=False)
    task_means = [tf.keras.metrics.Mean(f"loss_{name}") for name in t.tasks]

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
      if task_weights is None:
        loss = train_step(batch)
      else:
        recompute = task_weights.pareto and step % t.pareto_every == 0
        loss, task_values = (pareto_step if recompute else train_step)(batch)
        for mean, value in zip(task_means, tf.unstack(task_values)):
          mean.update_state(value)
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
          if task_weights is not None:
            _task_summaries(t.tasks, task_means, task_weights)
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
    if (t.eval_every_epoch or epoch == t.epochs - 1) and dist.is_chief:
      with average.swapped() if average is not None else contextlib.nullcontext():
        last_eval = _epoch_eval(config, prepared, two_tower, eval_writer, step, epoch,
                                last=epoch == t.epochs - 1)
  if average is not None:
    average.commit()
  manager.save(checkpoint_number=step)
  progress.update(step * t.batch_size, force=True)
  if stats is not None:
    stats["examples_per_sec"] = busy_examples / busy if busy > 0 else float("nan")
    stats["steps"] = step - start_step
  _finish(config, prepared, two_tower, train_writer, eval_writer, last_eval)
  return two_tower, last_eval


def _multi_task_step(batch, loss_fn, task_weights, variables, optimizer, average, step_var,
                     recompute):
  """One step on sum_k w_k L_k of --tasks; `recompute` (a Python bool) first sets the Pareto
  weights from the heads' gradients of every (shared) variable.

  Returns:
    (weighted loss: scalar, the heads' losses: float32 [K]).
  """
  with tf.GradientTape(persistent=recompute) as tape:
    task_list = loss_fn.task_losses(batch, step_var)
    task_losses = tf.stack(task_list)  # [K]
  if recompute:
    weights = task_weights.recompute([tape.gradient(l, variables) for l in task_list],
                                     variables)
  else:
    weights = task_weights.weights.read_value()  # [K]
  # d(sum_k w_k L_k) = sum_k w_k dL_k in one backward pass (w carries no gradient).
  grads = tape.gradient(task_losses, variables, output_gradients=weights)
  optimizer.apply_gradients(zip(grads, variables))
  if average is not None:
    average.update()
  step_var.assign_add(1)
  return tf.tensordot(weights, task_losses, 1), task_losses


def _task_summaries(names, task_means, task_weights):
  """train/task_loss/<task> (mean since the last log) and train/task_weight/<task> (now)."""
  weights = task_weights.weights.numpy()
  for name, mean, weight in zip(names, task_means, weights):
    tf.summary.scalar(f"train/task_loss/{name}", float(mean.result()))
    tf.summary.scalar(f"train/task_weight/{name}", float(weight))
    mean.reset_state()


def _epoch_eval(config, prepared, two_tower, eval_writer, step, epoch, last):
  """The evaluation after an epoch: summaries and log lines; returns the figures.

  Every user of the split is scored after the `last` epoch; after the others at most
  --eval_users of them (a seeded sample). When that sample is smaller than the split, its
  figures go to eval_sampled/* after every evaluated epoch, the last included (so the curve
  reaches the end), and the whole split's to eval/* after the last.
  """
  t = config.train
  split = "validation" if prepared.valid is not None else "test"
  # Without --eval_every_epoch the last evaluation is the only one: no sample (no curve).
  sampled = evaluate_lib.evaluate_both(two_tower, prepared, split, t.temperature, t.tasks,
                                       max_users=t.eval_users if t.eval_every_epoch else 0,
                                       seed=t.seed)
  if "users" in sampled:
    _eval_summaries(config, sampled, eval_writer, step, epoch, split, "eval_sampled")
  if last or "users" not in sampled:
    both = (sampled if "users" not in sampled else
            evaluate_lib.evaluate_both(two_tower, prepared, split, t.temperature, t.tasks))
    _eval_summaries(config, both, eval_writer, step, epoch, split, "eval")
  else:
    both = sampled
  if prepared.cold is not None:
    both["cold_users"] = evaluate_lib.evaluate_cold(two_tower, prepared, t.temperature)
    with eval_writer.as_default(step=step):
      for k, v in both["cold_users"]["twotower"].items():
        tf.summary.scalar(f"eval_cold_users/{k}", v)
    logging.info("epoch %d cold users: %s | most-popular %s", epoch + 1,
                 evaluate_lib.summary(both["cold_users"]["twotower"]),
                 evaluate_lib.summary(both["cold_users"]["most_popular"]))
  return both


def _eval_summaries(config, both, eval_writer, step, epoch, split, prefix):
  """One evaluation's TensorBoard scalars (<prefix>/*: the primary figures, the other kind
  under <prefix>_seen_included/* or <prefix>_seen_excluded/*) and log lines."""
  t = config.train
  primary = "seen_included" if t.include_seen else "seen_excluded"
  other = "seen_excluded" if t.include_seen else "seen_included"
  main = both[primary]
  with eval_writer.as_default(step=step):
    for k, v in main.items():
      tf.summary.scalar(f"{prefix}/{k}", v)
    for k, v in both[other].items():
      tf.summary.scalar(f"{prefix}_{other}/{k}", v)
    for name, figures in both.get("tasks", {}).items():
      for k, v in figures.items():
        tf.summary.scalar(f"{prefix}/{name}/{k}", v)
  users = both.get("users")
  what = split if users is None else (f"{split}, a sample of {users['evaluated']:,} of "
                                      f"{users['in_split']:,} users")
  logging.info("epoch %d (%s): hit@10 %.4f hit@100 %.4f ndcg@10 %.4f mrr %.4f | seen "
               "included hit@100 %.4f", epoch + 1, what, main["hit@10"], main["hit@100"],
               main["ndcg@10"], main["mrr"], both["seen_included"]["hit@100"])
  for name, figures in both.get("tasks", {}).items():
    logging.info("epoch %d (%s): %s %s", epoch + 1, what, name, evaluate_lib.summary(figures))


def _finish(config, prepared, two_tower, train_writer, eval_writer, last_eval):
  write_hparams(config, train_writer, last_eval)
  write_projector(config.model_dir, two_tower, prepared.data)
  train_writer.flush()
  eval_writer.flush()


# A Keras optimizer's checkpoint entries: its step, then (after any other variable of its
# own) for each variable it was built on, in order, its state variables interleaved (Adam's
# m and v, lazy Adam's too; Adagrad's accumulator; SGD's momentum).
_OPTIMIZER_ITERATIONS = "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"
_OPTIMIZER_VARIABLE = "optimizer/_variables/{}/.ATTRIBUTES/VARIABLE_VALUE"


def _state_lists(optimizer):
  """The optimizer's per-variable state lists, in the order it interleaves them."""
  for names in (("_momentums", "_velocities"), ("_accumulators",), ("momentums",)):
    lists = [getattr(optimizer, name, None) for name in names]
    if all(isinstance(x, list) and x for x in lists):
      return lists
  return []  # SGD without momentum: no state


def restore_into_layout(path, two_tower, optimizer, variables, step_var, average=None,
                        task_weights=None):
  """Restores checkpoint `path` into towers whose tables are split into another number of
  shards than when it was saved (another --num_ps_shards, parameter-server count, or one
  process). The towers' tables are saved whole and restore into any layout; the optimizer's
  state is saved per shard, so it is read from the checkpoint, joined table by table and
  split again for `variables` (the list the optimizer was built on, in the same order as
  the saving run's: `resplit_slots`)."""
  # Everything but the optimizer, as the run's checkpoint names it.
  without_optimizer, _ = model_lib.make_checkpoint(two_tower, None, average, task_weights,
                                                   step=step_var)
  without_optimizer.restore(path).expect_partial()
  reader = tf.train.load_checkpoint(path)
  optimizer.iterations.assign(reader.get_tensor(_OPTIMIZER_ITERATIONS))
  lists = _state_lists(optimizer)
  if not lists:
    return
  kinds = len(lists)
  first = len(optimizer.variables) - kinds * len(variables)  # its own variables before
  saved = reader.get_variable_to_shape_map()
  slots, k = [], 0
  while _OPTIMIZER_VARIABLE.format(first + kinds * k) in saved:
    slots.append(tuple(reader.get_tensor(_OPTIMIZER_VARIABLE.format(first + kinds * k + j))
                       for j in range(kinds)))
    k += 1
  # Consecutive shards of one table ("<table>/part_<i>", from part_0 on) are one group, any
  # other variable is a group of its own.
  groups = []
  for v in variables:
    table = v.name.split("/part_")[0] if "/part_" in v.name else None
    if (table is not None and groups and groups[-1][0] == table
        and "/part_0:" not in v.name):
      groups[-1][1].append(v)
    else:
      groups.append((table, [v]))
  parts = resplit_slots(slots, [[tuple(v.shape) for v in group] for _, group in groups])
  for (_, group), group_parts in zip(groups, parts):
    for v, values in zip(group, group_parts):
      index = optimizer._get_variable_index(v)  # pylint: disable=protected-access
      for state, value in zip(lists, values):
        state[index].assign(value)


def resplit_slots(slots, groups):
  """The saved state tuples (one per variable of the saving run, in order: Adam's (m, v))
  joined and split for `groups` (the new variables' shapes, grouped by table: a table's
  shards in row order, or one variable alone), consuming saved entries in order until
  their rows make the group's rows. Returns, per group, a state tuple per new variable.
  Raises UserError when the saved entries do not fit (another model: resume with the
  same flags)."""
  misfit = UserError("the checkpoint's optimizer state does not match this model's "
                     "variables: resume with the flags it was trained with, or "
                     "--resume=false")
  out, k = [], 0
  for shapes in groups:
    rows = sum(s[0] for s in shapes) if shapes[0] else None
    taken = []
    while k < len(slots) and (rows is None and not taken or
                              rows is not None and sum(e[0].shape[0] for e in taken) < rows):
      taken.append(slots[k])
      k += 1
    trailing = {tuple(e[0].shape[1:]) for e in taken} | {tuple(s[1:]) for s in shapes}
    got = None if rows is None else sum(e[0].shape[0] for e in taken)
    if not taken or got != rows or len(trailing) != 1 or (rows is None and len(taken) != 1):
      raise misfit
    if rows is None:  # a scalar variable
      out.append([taken[0]])
      continue
    cuts = np.cumsum([s[0] for s in shapes])[:-1]
    joined = [np.split(np.concatenate([e[j] for e in taken]), cuts)
              for j in range(len(taken[0]))]
    out.append(list(zip(*joined)))
  if k != len(slots):
    raise misfit
  return out


def _train_on_cluster(config, rundir, prepared, stats, dist, two_tower, step_fn, step_var,
                      schedule, manager, steps_per_epoch, total_steps, drop,
                      cluster_input="coordinator"):
  """The loop of --strategy=parameter_server: this process (the chief) schedules steps that
  the workers run asynchronously on their own copy of the training split, and joins them
  at every log, checkpoint and epoch boundary (summaries, checkpoints and the evaluation
  run here, reading the sharded tables from the parameter servers)."""
  t = config.train
  strategy, coordinator = dist.strategy, dist.coordinator
  train_data = prepared.train
  if cluster_input == "workers":
    # Each worker reads its share of the split from the run directory (a file written here
    # every run, so it is always the prepared split).
    split_path = os.path.abspath(rundir.file(inputs.WORKER_SPLIT_FILE))
    inputs.save_worker_split(split_path, train_data)
    examples = len(train_data)
    dataset_fn = lambda: inputs.worker_dataset_from_file(
        split_path, examples, t.batch_size, drop, dist.num_workers)
  else:
    dataset_fn = lambda: inputs.worker_dataset(train_data, t.batch_size, drop,
                                               dist.num_workers)
  per_worker = coordinator.create_per_worker_dataset(dataset_fn)
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
        last_eval = _epoch_eval(config, prepared, two_tower, eval_writer, step, epoch,
                                last=step == total_steps)
  manager.save(checkpoint_number=step)
  progress.update(step * t.batch_size, force=True)
  if stats is not None:
    stats["examples_per_sec"] = busy_steps * t.batch_size / busy if busy > 0 else float("nan")
    stats["steps"] = step - start_step
  _finish(config, prepared, two_tower, train_writer, eval_writer, last_eval)
  return two_tower, last_eval


def positives_counts(train_data):
  """Item frequencies of the positive training stream: int64 [num_items]."""
  if train_data.labels is not None and train_data.binary_labels:
    keep = train_data.labels > 0
    return np.bincount(train_data.items[keep], minlength=train_data.num_items)
  return train_data.item_counts()


def write_hparams(config, writer, last_eval):
  """Logs the hyper-parameters (HParams plugin and text) and the last evaluation's figures."""
  config_lib.run_dir(config.model_dir).write_hparams(
      writer, config, metrics=last_eval.get("seen_excluded", {}))


def write_projector(model_dir, two_tower, data):
  """Item embeddings + titles for the TensorBoard Projector (RunDir.write_projector)."""
  emb = two_tower.item_tower.embed_all()
  ids = [str(x) for x in data.item_ids]
  config_lib.run_dir(model_dir).write_projector(
      ids, emb, tensor_name="item_embeddings",
      columns={"item_id": ids, "title": data.item_titles or ids})
