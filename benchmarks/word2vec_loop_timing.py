"""Where a word2vec training run spends its time, run after run (diagnosis, not a test).

About one skip-gram run in four on the 2-core dev machine took 40 s instead of 15-20 s
(211k words/s on the SOTU+Brown benchmark corpus) with the compiled step and the data
pipeline at their usual times. This script trains the same configuration several times in
one process and splits each run's training time into: the compiled block (train_block,
including the host sync of its loss), waiting for the next block, checkpoint
saves, evaluation (excluded from the training time), and the rest (the Python loop). With
a tf.data prefetch buffer of a chunk of blocks the rest was 20 s in those runs (the
teardown of its iterator); the look-ahead is now a thread (word2vec/inputs.py
BlockPrefetcher), which the loop now reads directly (no tf.data).

    .venv/bin/python benchmarks/word2vec_loop_timing.py --corpus=PATH [--runs=6]
        [--model=skipgram] [--epochs=3]
"""
import argparse
import os
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# pylint: disable=wrong-import-position
from absl import logging

from tf_embeddings.word2vec import evaluate as evaluate_lib
from tf_embeddings.word2vec import inputs
from tf_embeddings.word2vec import model as model_lib
from tf_embeddings.word2vec import train as train_lib
from tf_embeddings.word2vec.config import Config

TIMES = {}


def _add(key, seconds):
  TIMES[key] = TIMES.get(key, 0.0) + seconds


def _instrument():
  block = model_lib.Word2Vec.train_block

  def train_block(self, *args, **kwargs):
    start = time.perf_counter()
    loss = block(self, *args, **kwargs)
    float(loss)
    _add("block", time.perf_counter() - start)
    return loss

  model_lib.Word2Vec.train_block = train_block
  prefetcher = inputs.block_prefetcher

  class Timed:
    def __init__(self, blocks):
      self.blocks = blocks

    def close(self):
      self.blocks.close()

    def __iter__(self):
      it = iter(self.blocks)
      while True:
        start = time.perf_counter()
        try:
          item = next(it)
        except StopIteration:
          return
        _add("data wait", time.perf_counter() - start)
        yield item

  inputs.block_prefetcher = lambda *a: Timed(prefetcher(*a))
  manager = train_lib.checkpoint_manager

  def checkpoint_manager(*args):
    m = manager(*args)
    save = m.save

    def timed_save(*a, **k):
      start = time.perf_counter()
      out = save(*a, **k)
      _add("checkpoints", time.perf_counter() - start)
      return out

    m.save = timed_save
    return m

  train_lib.checkpoint_manager = checkpoint_manager
  run = evaluate_lib.Evaluator.run

  def evaluator_run(self, *args):
    start = time.perf_counter()
    out = run(self, *args)
    _add("eval", time.perf_counter() - start)
    return out

  evaluate_lib.Evaluator.run = evaluator_run


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--corpus", default="", help="corpus spec (default: bundled SOTU)")
  p.add_argument("--model", default="skipgram", choices=["skipgram", "cbow"])
  p.add_argument("--epochs", type=int, default=3)
  p.add_argument("--runs", type=int, default=6)
  p.add_argument("--batch_size", type=int, default=0, help="0 = the app's default")
  p.add_argument("--steps_per_call", type=int, default=0, help="0 = the app's default")
  args = p.parse_args()
  logging.set_verbosity(logging.WARNING)
  _instrument()
  for r in range(args.runs):
    TIMES.clear()
    model_dir = tempfile.mkdtemp(prefix="loop_timing_")
    # The loss and the rest: the app's defaults for the model (config.resolve).
    config = Config(model_dir=model_dir, corpus=args.corpus, model=args.model,
                    epochs=args.epochs, eval_fraction=0.0, words=(),
                    batch_size=args.batch_size, steps_per_call=args.steps_per_call)
    inputs.prepare_data(config)  # not timed: vocabulary and encoding
    TIMES.clear()
    figures = train_lib.train(config)
    shutil.rmtree(model_dir, ignore_errors=True)
    train = figures["train_seconds"]
    rest = train - sum(TIMES.get(k, 0.0) for k in ("block", "data wait", "checkpoints"))
    print(f"run {r + 1}: {figures['train_words_per_sec']:,.0f} words/s, training {train:.1f}s ="
          f" compiled blocks {TIMES.get('block', 0):.1f}s + data wait "
          f"{TIMES.get('data wait', 0):.1f}s + checkpoints {TIMES.get('checkpoints', 0):.1f}s"
          f" + rest {rest:.1f}s (eval {TIMES.get('eval', 0):.1f}s, excluded)", flush=True)


if __name__ == "__main__":
  main()
