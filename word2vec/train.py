"""Training a word2vec run: corpus -> vocab -> ids -> blocks -> fused SGD -> summaries, checkpoints."""
import contextlib
import json
import os
import queue
import threading
import time

import numpy as np
import tensorflow as tf
from absl import logging

from tf_embeddings.data import corpus as corpus_lib
from tf_embeddings.data import pipeline
from tf_embeddings.data.atomic import atomic_write
from tf_embeddings.data.errors import UserError
from tf_embeddings.data.vocab import Vocabulary, VocabularyBuilder
from tf_embeddings.training import rundir as rundir_lib
from tf_embeddings.training.progress import Progress, StepTimer
from tf_embeddings.word2vec import config as config_lib
from tf_embeddings.word2vec import evaluate as evaluate_lib
from tf_embeddings.word2vec.model import StepConfig, Word2Vec

VOCAB_FILE = "vocab.tsv"
IDS_FILE = "ids.int32"
IDS_META = "ids.json"
CHECKPOINT_DIR = rundir_lib.CHECKPOINT_DIR
TIMINGS_FILE = "timings.json"
ENCODE_CHUNK = 1 << 22  # provisional ids mapped to final ids at a time (16 MB)
# The phases of a `word2vec train` command, in order, as timings.json records them (seconds).
PHASES = ("startup", "vocabulary", "encoding", "setup", "compilation", "training",
          "evaluation", "checkpoints", "export")


def seconds_since_process_start():
  """Seconds since this process started (Linux /proc; None elsewhere)."""
  try:
    with open("/proc/self/stat", encoding="ascii") as f:
      start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime", encoding="ascii") as f:
      uptime = float(f.read().split()[0])
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
  except (OSError, ValueError, IndexError, AttributeError):
    return None


# ---------------------------------------------------------------- data preparation

# Settings that may change when a run is resumed: they do not change what was learned so
# far (evaluation and logging cadence; more epochs extend the run). Anything else differing
# from the run's config.json is refused once the run has a checkpoint.
FREE_FIELDS = ("model_dir", "resume", "epochs", "eval_examples", "eval_every_epochs",
               "summary_every_secs", "checkpoint_every_steps", "checkpoint_every_secs", "words",
               "analogy_restrict", "projector_words")
# The run's own files: what --resume=false removes (nothing else in the directory).
RUN_FILES = (CHECKPOINT_DIR, "train", VOCAB_FILE, IDS_FILE, IDS_META, "eval.json",
             TIMINGS_FILE, rundir_lib.CONFIG_FILE)


def run_dir(model_dir):
  return rundir_lib.RunDir(model_dir, config_lib.Config, free=FREE_FIELDS,
                           monotone=("epochs",))


def checkpoint_manager(rundir, ckpt):
  """The run's CheckpointManager (half-written saves of a killed run removed)."""
  return rundir.checkpoint_manager(ckpt)


def _data_key(config):
  return {"corpus": config.corpus, "tokenizer": config.tokenizer,
          "min_count": config.min_count, "max_vocab_size": config.max_vocab_size}


def prepare_data(config, require_cached=False, timings=None):
  """Builds (or reuses) vocab.tsv and the encoded id file in the run directory.

  They are reused only when they were built with the same data flags from the same corpus
  bytes (size, mtime and sha256 of every corpus file, see rundir.fingerprint).

  Args:
    config: the run's Config.
    require_cached: the run has checkpoints, so its vocabulary must be the cached one: a
      changed corpus is an error instead of a rebuild.
    timings: optional dict, gets the seconds of the "vocabulary" and "encoding" passes.

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
  logging.info("corpus: %s", corpus.describe())
  with contextlib.suppress(FileNotFoundError):
    os.remove(meta_path)  # vocab and ids are reused only once both are complete
  # One tokenisation pass counts the words and writes their provisional ids (data/vocab.py
  # VocabularyBuilder); encoding maps those to the final ids, chunk by chunk.
  start = time.monotonic()
  builder = VocabularyBuilder()
  provisional = ids_path + ".provisional"
  try:
    with open(provisional, "wb") as f:
      for chunk in corpus.iter_token_chunks():
        builder.add(chunk).tofile(f)
    vocab, lookup = builder.vocabulary(config.min_count, config.max_vocab_size or None)
    logging.info("vocabulary: %d words (UNK included), %d tokens, UNK count %d", len(vocab),
                 vocab.total_count, int(vocab.counts[0]))
    vocab.save(vocab_path)
    vocab_seconds = time.monotonic() - start
    start = time.monotonic()
    n = 0
    with open(provisional, "rb") as src, atomic_write(ids_path, "wb") as f:
      while True:  # read, not memory-mapped: the resident memory stays one chunk
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


def step_config(config, vocab_size):
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
      train_biases=config.train_biases, layout="runs", row_update=config.row_update)


def build_model(config, vocab):
  if config.num_sampled >= len(vocab) - 1:
    raise UserError(f"the vocabulary has {len(vocab) - 1} words besides UNK, not more than "
                    f"--num_sampled={config.num_sampled}: lower --num_sampled or "
                    "--min_count, or use a bigger corpus")
  return Word2Vec(step_config(config, len(vocab)), unigram_counts=vocab.counts,
                  seed=config.seed)


def make_checkpoint(model):
  state = {
      "epoch": tf.Variable(0, dtype=tf.int64, name="epoch"),
      "next_chunk": tf.Variable(0, dtype=tf.int64, name="next_chunk"),
      "step": tf.Variable(0, dtype=tf.int64, name="step"),
  }
  ckpt = tf.train.Checkpoint(input_embeddings=model.input_embeddings,
                             output_embeddings=model.output_embeddings,
                             output_biases=model.output_biases, **state)
  return ckpt, state


# ---------------------------------------------------------------- training

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
  (RootDataset's UnboundedThreadPool). `_dataset` therefore turns autotuning off (nothing
  there to tune) and has no `prefetch`: the look-ahead is this thread.
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


def _prefetcher(stream, epoch, start_chunk, config):
  """The blocks of every remaining epoch, generated about one chunk ahead.

  One stream spans the epochs, so an epoch boundary does not restart the generator, and
  the buffer holds about one chunk's blocks: the generator makes a whole chunk before its
  first block, and a smaller buffer would run dry while it does.
  """
  block_bytes = 4 * config.steps_per_call * (2 * config.batch_size + stream.input_width)
  cap = max(2, (256 << 20) // block_bytes)  # at most 256 MiB of prefetched blocks
  size = int(min(cap, max(2, 1.25 * stream.expected_blocks_per_chunk() + 2)))
  return BlockPrefetcher(stream.all_blocks(epoch, start_chunk, config.epochs), size)


def _dataset(prefetcher, stream):
  """tf.data over the prefetched blocks: no `prefetch` and no autotuning (the look-ahead is
  the prefetcher's thread; autotuning stalled the end of training, see BlockPrefetcher)."""
  steps, batch = stream.steps_per_call, stream.batch_size
  signature = {
      "inputs": tf.TensorSpec([steps, stream.input_width], tf.int32),
      "lengths": tf.TensorSpec([steps, batch], tf.int32),
      "targets": tf.TensorSpec([steps, batch], tf.int32),
      "epoch": tf.TensorSpec([], tf.int64),
      "chunk": tf.TensorSpec([], tf.int64),
      "chunk_done": tf.TensorSpec([], tf.bool),
      "tokens": tf.TensorSpec([], tf.float64),
  }
  options = tf.data.Options()
  options.autotune.enabled = False
  return tf.data.Dataset.from_generator(lambda: iter(prefetcher),
                                        output_signature=signature).with_options(options)


def train(config):
  """Trains (or resumes) the run in config.model_dir. Returns the final eval figures.

  The run directory is locked for the whole call (a second trainer is refused). A run
  directory this call created is removed again if training fails before the run is set up
  (config.json written): a bad corpus or flag leaves nothing behind.
  """
  with run_dir(config.model_dir).training() as rundir:
    return _train(config, rundir)


def evaluates_after(config, epoch):
  """Whether training evaluates after `epoch` (0-based): every --eval_every_epochs epochs
  (never during training if it is 0), and always after the last one."""
  every = config.eval_every_epochs
  return epoch + 1 == config.epochs or (every > 0 and (epoch + 1) % every == 0)


def _train(config, rundir):
  call_start = time.monotonic()
  timings = dict.fromkeys(PHASES, 0.0)
  timings["startup"] = seconds_since_process_start() or 0.0
  has_checkpoint = rundir.prepare_train(config, config.resume, RUN_FILES)
  vocab, ids = prepare_data(config, require_cached=has_checkpoint, timings=timings)
  setup_start = time.monotonic()
  model = build_model(config, vocab)
  train_ids, heldout_ids = split_ids(ids, config.eval_fraction)
  keep = pipeline.keep_probabilities(vocab.counts, config.subsample)
  stream = pipeline.BlockStream(train_ids, keep, config.model, config.window,
                                config.batch_size, config.steps_per_call, config.seed,
                                chunk_tokens=config.chunk_tokens)
  ckpt, state = make_checkpoint(model)
  manager = checkpoint_manager(rundir, ckpt)
  if has_checkpoint and manager.latest_checkpoint:
    ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    logging.info("resumed from %s: epoch %d, chunk %d, step %d", manager.latest_checkpoint,
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
  trained_blocks = 0
  last_summary = time.monotonic()
  eval_total = 0.0
  train_start = time.monotonic()
  start_done = done

  def save(epoch, next_chunk):
    nonlocal last_ckpt_step, last_ckpt_time
    save_start = time.monotonic()
    last_ckpt_step = step
    state["epoch"].assign(epoch)
    state["next_chunk"].assign(next_chunk)
    state["step"].assign(step)
    manager.save(checkpoint_number=step)
    last_ckpt_time = time.monotonic()
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
    nonlocal figures
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
    figures = evaluator.run(model)
    evaluator.log(figures)
    with writer.as_default(step=step):
      for name, value in evaluate_lib.scalars(figures).items():
        tf.summary.scalar(f"eval/{name}", value)
    writer.flush()
    eval_seconds = time.monotonic() - eval_start
    progress.exclude(eval_seconds)
    return eval_seconds

  current = epoch
  blocks = _prefetcher(stream, epoch, start_chunk, config)  # nothing left: ends at once
  try:
    for block in _dataset(blocks, stream):
      block_epoch = int(block["epoch"])
      while current < block_epoch:
        eval_total += end_of_epoch(current)
        current += 1
      new_done = block_epoch * tokens_per_epoch + float(block["tokens"])
      lrs = schedule(np.linspace(done, new_done, config.steps_per_call, endpoint=False))
      block_start = time.monotonic()
      loss = model.train_block(block["inputs"], block["lengths"], block["targets"],
                               tf.constant(lrs, tf.float32), step)
      trained_blocks += 1
      loss = float(loss)  # The one host sync of the block.
      # A block that compiled (the first of its shape: of skip-gram's reduced window) is left
      # out of the rate and the ETA: they are measured from the block after it.
      compiled = step_timer.add(time.monotonic() - block_start,
                                key=model.block_window(block["lengths"]))
      step += config.steps_per_call
      if not np.isfinite(loss):
        raise UserError(
            f"the training loss became {loss} at step {step}: the "
            f"updates diverged; lower --learning_rate (now {lr0}) or --batch_size (now "
            f"{config.batch_size}), then rerun with --resume=false")
      done = new_done
      loss_sum += loss
      loss_count += 1
      if compiled:
        progress.rebase(done)
      rate = progress.update(done, loss)
      now = time.monotonic()
      if now - last_summary >= config.summary_every_secs or trained_blocks == 1:
        last_summary = now
        with writer.as_default(step=step):
          tf.summary.scalar("train/loss", loss_sum / loss_count)
          tf.summary.scalar("train/learning_rate", float(lrs[-1]))
          if rate > 0:  # none yet after the first block (its time is compilation)
            tf.summary.scalar("train/words_per_sec", rate)
        loss_sum, loss_count = 0.0, 0
      if bool(block["chunk_done"]) and checkpoint_due():
        save(block_epoch, int(block["chunk"]) + 1)
  finally:
    blocks.close()
  while current < config.epochs:
    eval_total += end_of_epoch(current)
    current += 1
  progress.update(done, force=True)
  train_seconds = time.monotonic() - train_start - eval_total
  if not figures:
    eval_start = time.monotonic()
    figures = evaluator.run(model)
    evaluator.log(figures)
    eval_total += time.monotonic() - eval_start
  figures["train_seconds"] = train_seconds
  figures["train_words_per_sec"] = (done - start_done) / max(train_seconds, 1e-9)
  export_start = time.monotonic()
  evaluate_lib.write_projector(rundir, config, vocab, model.input_embeddings)
  rundir.save_eval(figures)
  writer.flush()
  timings["compilation"] = step_timer.compilation
  timings["evaluation"] = eval_total
  timings["training"] = max(0.0, train_seconds - timings["checkpoints"] -
                            timings["compilation"])
  timings["export"] = time.monotonic() - export_start
  timings["total"] = timings["startup"] + time.monotonic() - call_start
  write_timings(config.model_dir, timings)
  return figures


def write_timings(model_dir, timings):
  """timings.json: where this command's wall time went, by phase (seconds), and one log line.

  "training" is the loop less compilation and checkpoints; "startup" is process start and
  imports before train() (0 where unknown); "total" is the command up to here.
  """
  logging.info("timings: %s", ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
  with atomic_write(os.path.join(model_dir, TIMINGS_FILE)) as f:
    json.dump({k: round(v, 3) for k, v in timings.items()}, f, indent=2)
    f.write("\n")


def restore(config):
  """Loads the last checkpoint of a run for eval/export.

  Returns:
    (saved Config, Vocabulary, Word2Vec, held-out ids).
  """
  rundir = run_dir(config.model_dir)
  saved = rundir.load_config(
      what="word2vec run", hint="train one first with `word2vec train --model_dir=...`")
  vocab_path = os.path.join(config.model_dir, VOCAB_FILE)
  vocab = Vocabulary.load(vocab_path)
  model = Word2Vec(step_config(saved, len(vocab)), unigram_counts=vocab.counts,
                   seed=saved.seed)
  ckpt, _ = make_checkpoint(model)
  latest = rundir.latest_checkpoint()  # this --model_dir, not the one of config.json
  if not latest:
    raise UserError(f"--model_dir={config.model_dir} has no checkpoint yet: train it first "
                    "(or let the running training write its first checkpoint)")
  ckpt.restore(latest).expect_partial()
  ids_path = os.path.join(config.model_dir, IDS_FILE)
  heldout = np.zeros(0, np.int32)
  if os.path.exists(ids_path):
    _, heldout = split_ids(np.memmap(ids_path, dtype=np.int32, mode="r"), saved.eval_fraction)
  return saved, vocab, model, heldout
