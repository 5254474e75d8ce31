"""Training a word2vec run: the loop (inputs.py's blocks -> model.py's compiled SGD ->
summaries, checkpoints, evaluation), run directory set-up and timings.

Under --strategy=parameter_server (training/distribute.py) the tables are ShardedVariables
on the parameter servers and this process, the chief, makes the blocks as in one process
and schedules each on a worker (`ClusterBlocks`), which reads the rows the block touches,
runs the compiled block on them and adds their change back (`Word2Vec.train_block_on_rows`,
asynchronous: Hogwild, as word2vec is trained); the chief joins the workers before every
checkpoint and evaluation, and evaluates reading the rows it needs from the parameter
servers, in chunks (no copy of a table here). With
--cluster_input=workers each worker makes its own blocks instead (data/pipeline_ops.py) and
the chief schedules the expected number of them (`worker_plan`).
"""
import collections
import functools
import json
import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

from tf_embeddings.data import pipeline
from tf_embeddings.data import pipeline_ops
from tf_embeddings.data.atomic import atomic_write
from tf_embeddings.data.errors import UserError
from tf_embeddings.training import distribute
from tf_embeddings.training import rundir as rundir_lib
from tf_embeddings.training.progress import Progress, StepTimer
from tf_embeddings.word2vec import config as config_lib
from tf_embeddings.word2vec import evaluate as evaluate_lib
from tf_embeddings.word2vec import inputs
from tf_embeddings.word2vec import model as model_lib
from tf_embeddings.word2vec import run as run_lib

CHECKPOINT_DIR = rundir_lib.CHECKPOINT_DIR


def checkpoint_manager(rundir, ckpt):
  """The run's CheckpointManager (half-written saves of a killed run removed)."""
  return rundir.checkpoint_manager(ckpt)


# ---------------------------------------------------------------- training



def train(config, dist=None, cluster_input="coordinator"):
  """Trains (or resumes) the run in config.model_dir. Returns the final eval figures.

  The run directory is locked for the whole call (a second trainer is refused). A run
  directory this call created is removed again if training fails before the run is set up
  (config.json written): a bad corpus or flag leaves nothing behind.

  dist: `training.distribute.Distribution` (default: one process). Under parameter_server
  the workers train the blocks this process makes; the checkpoints hold the tables whole
  (in the run's row layout, which they record), so eval, export and resuming read them in
  any number of shards or in one process.
  cluster_input: on a cluster, where the blocks are made: "coordinator" (here, sent to the
  worker that trains each) or "workers" (each from its share of the corpus,
  data/pipeline_ops.py).
  """
  dist = dist or distribute.default()
  with config_lib.run_dir(config.model_dir).training() as rundir:
    timings = run_lib.new_timings()
    timings["startup"] = run_lib.seconds_since_process_start() or 0.0
    if dist.coordinator is not None:
      check_cluster_config(config)
    return train_prepared(config, rundir, dist, run_lib.prepare(config, rundir, timings),
                          timings, cluster_input)


def evaluates_after(config, epoch):
  """Whether training evaluates after `epoch` (0-based): every --eval_every_epochs epochs
  (never during training if it is 0), and always after the last one."""
  every = config.eval_every_epochs
  return epoch + 1 == config.epochs or (every > 0 and (epoch + 1) % every == 0)


class ClusterBlocks:
  """Schedules blocks on the workers of a parameter-server cluster and hands back their
  losses in the order scheduled, keeping at most `in_flight` blocks unfetched.

  One worker function per skip-gram window (the compiled program is per window, as in one
  process); each block's step seeds its negatives, so a block draws what it would draw
  in one process whichever worker runs it. A block whose worker dies is run again by the
  coordinator on another one (its change may then be added twice: asynchronous SGD).
  """

  def __init__(self, dist, model, in_flight):
    self.strategy, self.coordinator = dist.strategy, dist.coordinator
    self.model = model
    self.in_flight = in_flight
    self.pending = collections.deque()
    self._functions = {}

  def _function(self, window):
    if window not in self._functions:
      train_block = lambda *args: self.model.train_block_on_rows(*args, window=window)

      @tf.function(autograph=False)
      def worker_block(inputs, lengths, targets, lrs, step):
        return self.strategy.run(train_block, args=(inputs, lengths, targets, lrs, step))

      self._functions[window] = worker_block
    return self._functions[window]

  def read_on_workers(self, dataset_fn):
    """Blocks come from now on from a per-worker dataset (`schedule_on_worker`):
    dataset_fn() -> the dataset of one worker (data/pipeline_ops.py worker_blocks), run on
    each worker by ClusterCoordinator.create_per_worker_dataset."""
    self.iterator = iter(self.coordinator.create_per_worker_dataset(dataset_fn))
    model, c = self.model, self.model.config

    def train_block(inputs, lengths, targets, lrs, step):
      if c.model != "skipgram":
        return model.train_block_on_rows(inputs, lengths, targets, lrs, step)
      # The block's reduced window picks its program (one per window, as in one process).
      return tf.switch_case(lengths[0, 0] - 1, [
          functools.partial(model.train_block_on_rows, inputs, lengths, targets, lrs, step,
                            window=window) for window in range(1, c.window + 1)])

    @tf.function(autograph=False)
    def worker_block(iterator, lrs, step):
      block = next(iterator)
      return self.strategy.run(train_block, args=(block["inputs"], block["lengths"],
                                                  block["targets"], lrs, step))

    self._worker_block = worker_block

  def schedule_on_worker(self, lrs, step, info):
    """Schedules the next block of whichever worker runs it (`read_on_workers`)."""
    args = (self.iterator, tf.constant(lrs, tf.float32), tf.constant(step, tf.int64))
    self.pending.append((self.coordinator.schedule(self._worker_block, args=args), info))

  def schedule(self, block, lrs, step, info):
    """Schedules `block` (of train_block's args) on a worker; `info` comes back with it."""
    function = self._function(self.model.block_window(block["lengths"]))
    args = (tf.constant(block["inputs"]), tf.constant(block["lengths"]),
            tf.constant(block["targets"]), tf.constant(lrs, tf.float32),
            tf.constant(step, tf.int64))
    self.pending.append((self.coordinator.schedule(function, args=args), info))

  def finished(self, join=False):
    """[(loss, info)] of the oldest blocks beyond `in_flight` (join: of every block)."""
    if join:
      self.coordinator.join()
    done = []
    while self.pending and (join or len(self.pending) > self.in_flight):
      remote, info = self.pending.popleft()
      try:
        done.append((float(remote.fetch()), info))
      except tf.errors.UnavailableError as e:
        # Its worker ran it and died before the loss was copied here: the block's change
        # is on the parameter servers, only its loss is lost. (A lost parameter server
        # fails the next schedule or join, which ends the run.)
        logging.warning("the loss of the block ending at step %d is lost with its worker "
                        "(%s)", info[0], distribute.error_summary(e, 120))
    return done


def check_cluster_config(config):
  """Raises UserError for what does not run on parameter-server workers."""
  if config.sampler not in model_lib.IN_GRAPH_SAMPLERS:
    raise UserError(f"--sampler={config.sampler} does not run on parameter-server workers "
                    "(its state lives in one process): use "
                    f"{' or '.join('--sampler=' + s for s in model_lib.IN_GRAPH_SAMPLERS)}")


def _log_table_shards(model):
  for name in ("input_embeddings", "output_embeddings", "output_biases"):
    table = getattr(model, name)
    shards = getattr(table, "variables", None) or [table]
    logging.info("%s in %d shard%s on %s", name, len(shards), "s" if len(shards) > 1 else "",
                 ", ".join(s.device.split("/device")[0] for s in shards))
  logging.info("table rows: %s", "row = id" if model.layout.identity else
               f"row = id x {model.layout.multiplier} mod {model.layout.size} (spread)")


def train_prepared(config, rundir, dist, prepared, timings, cluster_input="coordinator"):
  """The rest of `train` once the run is prepared (run.prepare, holding the run's lock):
  the model, the loop, evaluation and export. `timings` (run.new_timings) has the phases
  so far: startup, vocabulary, encoding."""
  has_checkpoint, vocab, ids = prepared
  # --cluster_input=workers: the workers' chunk size, checked to give each one a block.
  worker_chunk = (check_worker_input(config, vocab, ids, dist.num_workers)
                  if dist.coordinator is not None and cluster_input == "workers" else None)
  setup_start = time.monotonic()
  latest = rundir.latest_checkpoint() if has_checkpoint else None
  with dist.scope():
    if dist.distributed:
      # Sharded tables start from the initialisation and are restored below, in the layout
      # of the checkpoint; a new run's spreads the frequent words over the shards.
      layout = (model_lib.checkpoint_layout(latest, len(vocab)) if latest
                else distribute.RowLayout.spread(len(vocab)) if dist.table_shards > 1
                else None)
      model = model_lib.build_model(config, vocab, table_scope=dist.tables, layout=layout)
    else:
      # A resumed run's tables are read straight from its last checkpoint (one copy each).
      model = model_lib.build_model(config, vocab, checkpoint=latest)
  cluster = None
  if dist.coordinator is not None:
    _log_table_shards(model)
    cluster = ClusterBlocks(dist, model, in_flight=4 * dist.num_workers)
  train_ids, heldout_ids = inputs.split_ids(ids, config.eval_fraction)
  keep = pipeline.keep_probabilities(vocab.counts, config.subsample)
  stream = pipeline.BlockStream(train_ids, keep, config.model, config.window,
                                config.batch_size, config.steps_per_call, config.seed,
                                chunk_tokens=config.chunk_tokens)
  ckpt, state = model_lib.make_checkpoint(model)
  manager = checkpoint_manager(rundir, ckpt)
  if latest:
    # The position in the run; in one process the tables came with the model (in id
    # order). The layout was read before (`checkpoint_layout`), and is absent from older
    # checkpoints: not restored here.
    tables = {name: getattr(model, name) for name in model_lib.TABLES} if dist.distributed \
        else {}
    restored = tf.train.Checkpoint(**tables, **state)
    restored.restore(latest).assert_existing_objects_matched()
    logging.info("resumed from %s: epoch %d, chunk %d, step %d", latest,
                 int(state["epoch"]), int(state["next_chunk"]), int(state["step"]))
  # Recorded once the run is known to be compatible; nothing trained yet: as is.
  rundir.save_config(config, step=int(state["step"]),
                     extra={"resolved_learning_rate": config.lr}, fresh=not has_checkpoint)
  evaluator = evaluate_lib.Evaluator(config, vocab, heldout_ids)
  writer = rundir.summary_writer(rundir_lib.TRAIN_LOGS)
  rundir.write_hparams(writer, config, extra={"resolved_learning_rate": config.lr})
  timings["setup"] = time.monotonic() - setup_start

  tokens_per_epoch = stream.num_tokens
  total = tokens_per_epoch * config.epochs
  lr0 = config.lr
  floor = lr0 * config.min_learning_rate_ratio

  def schedule(done):
    return np.maximum(lr0 * (1.0 - done / total), floor)

  epoch = int(state["epoch"])
  start_chunk = int(state["next_chunk"])
  if start_chunk >= stream.num_chunks:
    epoch, start_chunk = epoch + 1, 0
  done = epoch * tokens_per_epoch + start_chunk * config.chunk_tokens
  progress = Progress(total, unit="words", every=config.summary_every_secs)
  progress.update(done)
  step = int(state["step"])
  last_ckpt_step = step
  last_ckpt_time = time.monotonic()
  step_timer = StepTimer()
  loss_sum, loss_count = 0.0, 0
  figures = {}
  last_summary = time.monotonic()
  eval_total = 0.0
  eval_during = 0.0  # the sampled evaluations after epochs other than the last
  train_start = time.monotonic()
  start_done = done
  recorded = 0

  def record(loss, at_step, at_done, lr, compiled=False):
    """The loss of the block that ended at step `at_step`, `at_done` words into the run,
    whose last learning rate was `lr`: the divergence check, the progress line and the
    summaries."""
    nonlocal loss_sum, loss_count, last_summary, recorded
    if not np.isfinite(loss):
      raise UserError(
          f"the training loss became {loss} at step {at_step}: the "
          f"updates diverged; lower --learning_rate (now {lr0}) or --batch_size (now "
          f"{config.batch_size}), then rerun with --resume=false")
    loss_sum += loss
    loss_count += 1
    recorded += 1
    if compiled:
      progress.rebase(at_done)
    rate = progress.update(at_done, loss)
    now = time.monotonic()
    if now - last_summary >= config.summary_every_secs or recorded == 1:
      last_summary = now
      with writer.as_default(step=at_step):
        tf.summary.scalar("train/loss", loss_sum / loss_count)
        tf.summary.scalar("train/learning_rate", lr)
        if rate > 0:  # none yet after the first block (its time is compilation)
          tf.summary.scalar("train/words_per_sec", rate)
      loss_sum, loss_count = 0.0, 0

  def drain():
    """Waits for every scheduled block (a cluster's) and records their losses."""
    if cluster is not None:
      for loss, info in cluster.finished(join=True):
        record(loss, *info)

  def save(epoch, next_chunk):
    nonlocal last_ckpt_step, last_ckpt_time
    drain()
    save_start = time.monotonic()
    last_ckpt_step = step
    state["epoch"].assign(epoch)
    state["next_chunk"].assign(next_chunk)
    state["step"].assign(step)
    path = manager.save(checkpoint_number=step)
    last_ckpt_time = time.monotonic()
    logging.info("saved checkpoint %s at step %d (epoch %d, chunk %d) in %.1f s", path, step,
                 epoch, next_chunk, last_ckpt_time - save_start)
    timings["checkpoints"] += last_ckpt_time - save_start
    progress.exclude(last_ckpt_time - save_start)

  def checkpoint_due():
    """--checkpoint_every_secs since the last save, or --checkpoint_every_steps steps."""
    every_steps, every_secs = config.checkpoint_every_steps, config.checkpoint_every_secs
    return ((every_steps > 0 and step - last_ckpt_step >= every_steps) or
            (every_secs >= 0 and time.monotonic() - last_ckpt_time >= every_secs))

  def end_of_epoch(epoch):
    """Checkpoint (after the last epoch, or when one is due) and evaluation (see
    evaluates_after); returns seconds spent evaluating."""
    nonlocal figures, eval_during
    drain()
    if step == 0:  # checked before saving: a rerun must not resume from nothing learned
      raise UserError(
          f"the training corpus ({stream.num_tokens} tokens) gives fewer examples than one "
          f"block of --batch_size={config.batch_size} x --steps_per_call="
          f"{config.steps_per_call}: lower them or use a bigger corpus")
    if epoch + 1 == config.epochs or checkpoint_due():
      save(epoch, stream.num_chunks)
    if not evaluates_after(config, epoch):
      return 0.0
    eval_start = time.monotonic()
    last = epoch + 1 == config.epochs
    # On a cluster too, evaluation reads `model`: its tables stay on the parameter servers
    # and evaluation gathers the rows it reads (analogies, similarity, neighbours, in
    # chunks) and scores the held-out loss shard by shard, a chunk of rows at a time
    # (losses.full_softmax_loss); nothing copies a whole table here.
    if config.eval_every_epochs > 0:
      # The sampled evaluation (eval_sampled/ in TensorBoard): during training, and after
      # the last epoch too, so its curve reaches the end of the run.
      sampled = evaluator.run(model, sampled=True)
      if not last:
        evaluator.log(sampled, prefix="eval_sampled")
      summarise(sampled, "eval_sampled")
    if last:
      figures = evaluator.run(model)
      evaluator.log(figures)
      summarise(figures, "eval")
    eval_seconds = time.monotonic() - eval_start
    if not last:
      eval_during += eval_seconds
      logging.info("evaluation after epoch %d took %.2f s", epoch + 1, eval_seconds)
    progress.exclude(eval_seconds)
    return eval_seconds

  def summarise(scores, group):
    with writer.as_default(step=step):
      for name, value in evaluate_lib.scalars(scores).items():
        tf.summary.scalar(f"{group}/{name}", value)
    writer.flush()

  current = epoch
  if worker_chunk is not None:
    ids_path = os.path.abspath(os.path.join(config.model_dir, inputs.IDS_FILE))
    num_workers = dist.num_workers
    chunk = worker_chunk
    first = start_chunk * config.chunk_tokens // chunk  # the resumed position in them

    def dataset_fn():
      return pipeline_ops.worker_blocks(
          ids_path, stream.num_tokens, keep, config.model, config.window, config.batch_size,
          config.steps_per_call, config.seed, chunk, epoch, first, config.epochs,
          tf.distribute.coordinator.experimental_get_current_worker_index(), num_workers)

    cluster.read_on_workers(dataset_fn)
    per_epoch = max(1, pipeline_ops.expected_blocks(
        vocab.counts, keep, stream.num_tokens, ids.shape[0], config.batch_size,
        config.steps_per_call))
    blocks = worker_plan(stream, epoch, start_chunk, config.epochs, per_epoch)
  else:
    # (nothing left to train: ends at once)
    blocks = inputs.block_prefetcher(stream, epoch, start_chunk, config)
  try:
    for block in blocks:
      block_epoch = int(block["epoch"])
      while current < block_epoch:
        eval_total += end_of_epoch(current)
        current += 1
      new_done = block_epoch * tokens_per_epoch + float(block["tokens"])
      lrs = schedule(np.linspace(done, new_done, config.steps_per_call, endpoint=False))
      if cluster is not None:
        info = (step + config.steps_per_call, new_done, float(lrs[-1]))
        if "inputs" in block:
          cluster.schedule(block, lrs, step, info)
        else:  # made by the worker that runs it
          cluster.schedule_on_worker(lrs, step, info)
        step += config.steps_per_call
        done = new_done
        for loss, info in cluster.finished():
          record(loss, *info)
      else:
        block_start = time.monotonic()
        loss = model.train_block(block["inputs"], block["lengths"], block["targets"],
                                 tf.constant(lrs, tf.float32), step)
        loss = float(loss)  # The one host sync of the block.
        # A block that compiled (the first of its shape: of skip-gram's reduced window) is
        # left out of the rate and the ETA: they are measured from the block after it.
        compiled = step_timer.add(time.monotonic() - block_start,
                                  key=model.block_window(block["lengths"]))
        step += config.steps_per_call
        done = new_done
        record(loss, step, done, float(lrs[-1]), compiled)
      if bool(block["chunk_done"]) and checkpoint_due():
        save(block_epoch, int(block["chunk"]) + 1)
  finally:
    blocks.close()
  while current < config.epochs:
    eval_total += end_of_epoch(current)
    current += 1
  progress.update(done, force=True)
  train_seconds = time.monotonic() - train_start - eval_total
  drain()
  if not figures:
    eval_start = time.monotonic()
    figures = evaluator.run(model)
    evaluator.log(figures)
    eval_total += time.monotonic() - eval_start
  figures["train_seconds"] = train_seconds
  figures["train_words_per_sec"] = (done - start_done) / max(train_seconds, 1e-9)
  export_start = time.monotonic()
  evaluate_lib.write_projector(rundir, config, vocab, model.input_embeddings, model.layout)
  rundir.save_eval(figures)
  writer.flush()
  timings["compilation"] = step_timer.compilation
  timings["evaluation"] = eval_total
  timings["training"] = max(0.0, train_seconds - timings["checkpoints"] -
                            timings["compilation"])
  timings["export"] = time.monotonic() - export_start
  timings["total"] = run_lib.seconds_since_process_start() or sum(timings.values())
  # Beside the phases: the part of "evaluation" spent before the last epoch's end.
  timings["evaluation_during_training"] = eval_during
  write_timings(config.model_dir, timings)
  return figures


def check_worker_input(config, vocab, ids, num_workers):
  """The chunk size of the workers' own input (--cluster_input=workers: equal chunks, a
  multiple of the number of workers, pipeline_ops.worker_chunk_tokens). Raises UserError
  unless every worker's share of the training text gives a block (a worker without one
  would wait for its input forever)."""
  train_tokens = inputs.split_ids(ids, config.eval_fraction)[0].shape[0]
  chunk = pipeline_ops.worker_chunk_tokens(train_tokens, config.chunk_tokens, num_workers)
  smallest = min(pipeline_ops.worker_tokens(train_tokens, chunk, num_workers))
  keep = pipeline.keep_probabilities(vocab.counts, config.subsample)
  if pipeline_ops.expected_blocks(vocab.counts, keep, smallest, ids.shape[0],
                                  config.batch_size, config.steps_per_call) < 1:
    raise UserError(
        f"--cluster_input=workers: a worker's share of the corpus ({smallest} tokens) "
        f"gives less than one block of --batch_size={config.batch_size} x "
        f"--steps_per_call={config.steps_per_call} centres: use "
        "--cluster_input=coordinator, fewer workers or a bigger corpus")
  return chunk


def worker_plan(stream, epoch, start_chunk, epochs, blocks_per_epoch):
  """What the chief knows of the blocks the workers make (--cluster_input=workers): one
  dict per block to schedule with BlockStream.blocks' epoch, tokens, chunk and chunk_done
  (no arrays), `blocks_per_epoch` of them a pass (pipeline_ops.expected_blocks) spread
  evenly over its tokens. The chief does not see which text a worker's block came from, so
  the position (learning rate, progress, a checkpoint's next chunk) is the expected one."""
  size = stream.chunk_tokens
  for e in range(epoch, epochs):
    first = start_chunk * size if e == epoch else 0
    span = stream.num_tokens - first
    n = max(1, round(blocks_per_epoch * span / stream.num_tokens))
    for b in range(n):
      before, after = first + span * b / n, first + span * (b + 1) / n
      last = b == n - 1
      yield {"epoch": e, "tokens": after,
             # chunk + 1 is where a checkpoint after this block resumes
             "chunk": stream.num_chunks - 1 if last else int(after // size) - 1,
             "chunk_done": last or int(after // size) > int(before // size)}


def write_timings(model_dir, timings):
  """timings.json: where this command's wall time went, by phase (seconds), and one log line.

  "training" is the loop less compilation and checkpoints; "startup" is process start and
  imports before train() (0 where unknown); "total" is the command up to here.
  """
  logging.info("timings: %s", ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
  with atomic_write(os.path.join(model_dir, run_lib.TIMINGS_FILE)) as f:
    json.dump({k: round(v, 3) for k, v in timings.items()}, f, indent=2)
    f.write("\n")
