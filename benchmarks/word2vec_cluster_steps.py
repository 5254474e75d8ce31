"""Where a word2vec block's time goes on a parameter-server cluster (issue 11), vs one process.

Starts a local cluster (`--workers` workers + `--ps` parameter servers as child processes on
loopback, training/distribute.py LocalCluster), builds the run's model with its tables
sharded over the servers, makes `--blocks` blocks of the corpus with the app's pipeline, and
schedules them on the workers four times, each time stopping the worker function at a later
phase (`Word2Vec.train_block_on_rows(..., upto=...)`):

  rpc      a function that only returns (the block's arrays are still sent): scheduling,
           argument transfer, the closure's round trip;
  gather   + the in-graph draws, tf.unique over the block's ids and the rows read from the
           parameter servers (tf.nn.embedding_lookup over the shards);
  compute  + the XLA block on those rows (kernels.block_on_rows);
  full     + scatter_add of the change back to the servers: what training runs.

Each phase's share is the difference of adjacent totals (all blocks scheduled, then one
join; at most 4 blocks per worker in flight, as the app). Beside them, in this process: the
single-process block on whole tables (what `word2vec train` runs without a cluster) and the
same rows path without RPC (tables local). Prints ms per block and raw corpus words/s.

    .venv/bin/python benchmarks/word2vec_cluster_steps.py [--corpus=PATH] [--model=cbow]
        [--blocks=40] [--workers=1] [--ps=1] [--layout=spread|id]

On 2 cores the servers, the chief and XLA share the cores: this shows the cost of each
phase, not scaling (docs/scaling.md).
"""
import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# pylint: disable=wrong-import-position
import numpy as np

from tf_embeddings.data import pipeline
from tf_embeddings.training import distribute
from tf_embeddings.word2vec import config as config_lib
from tf_embeddings.word2vec import inputs
from tf_embeddings.word2vec import model as model_lib

PHASES = ("rpc", "gather", "compute", "full")


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
  p.add_argument("--corpus", default="", help="corpus spec (default: bundled SOTU)")
  p.add_argument("--model", default="cbow", choices=["skipgram", "cbow"])
  p.add_argument("--blocks", type=int, default=40)
  p.add_argument("--workers", type=int, default=1)
  p.add_argument("--ps", type=int, default=1)
  p.add_argument("--repeats", type=int, default=2, help="timed passes; the best is kept")
  p.add_argument("--layout", default="spread", choices=["spread", "id"],
                 help="the tables' row layout on the cluster: spread (what a new run on more "
                      "than one shard uses) or row = id")
  args = p.parse_args()
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  run_dir = tempfile.mkdtemp(prefix="w2v_cluster_steps_")
  config = config_lib.Config(model_dir=run_dir, corpus=args.corpus, model=args.model)
  vocab, ids = inputs.prepare_data(config)
  keep = pipeline.keep_probabilities(vocab.counts, config.subsample)
  stream = pipeline.BlockStream(ids, keep, config.model, config.window, config.batch_size,
                                config.steps_per_call, config.seed,
                                chunk_tokens=config.chunk_tokens)
  blocks, tokens = [], 0.0
  for b in stream.all_blocks(0, 0, 1):
    blocks.append(b)
    tokens = float(b["tokens"])
    if len(blocks) == args.blocks:
      break
  words_per_block = tokens / len(blocks)
  lrs = tf.constant(np.full(config.steps_per_call, 0.01, np.float32))
  print(f"{args.model}: vocabulary {len(vocab):,}, {len(blocks)} blocks of "
        f"{config.batch_size} x {config.steps_per_call} examples, "
        f"{words_per_block:,.0f} raw words a block", flush=True)

  results = {}

  def report(name, seconds):
    ms = 1e3 * seconds / len(blocks)
    results[name] = ms
    print(f"  {name:<34} {ms:8.1f} ms/block {words_per_block / ms * 1e3:>12,.0f} words/s",
          flush=True)

  def best_of(run):
    run()  # compiles
    times = []
    for _ in range(args.repeats):
      start = time.perf_counter()
      run()
      times.append(time.perf_counter() - start)
    return min(times)

  # One process: whole tables, and the rows path without RPC.
  local = model_lib.build_model(config, vocab)

  def one_process():
    for i, b in enumerate(blocks):
      float(local.train_block(b["inputs"], b["lengths"], b["targets"], lrs,
                              i * config.steps_per_call))

  rows_fns = {}

  def local_rows():
    for i, b in enumerate(blocks):
      window = local.block_window(b["lengths"])
      if window not in rows_fns:
        rows_fns[window] = tf.function(
            lambda a, l, t, r, s, w=window: local.train_block_on_rows(a, l, t, r, s, window=w),
            autograph=False)
      float(rows_fns[window](tf.constant(b["inputs"]), tf.constant(b["lengths"]),
                             tf.constant(b["targets"]), lrs,
                             tf.constant(i * config.steps_per_call, tf.int64)))

  print("one process:")
  report("block on whole tables (train_block)", best_of(one_process))
  report("rows path, no RPC", best_of(local_rows))

  with distribute.distribution("word2vec", "tf_embeddings.word2vec", "parameter_server",
                               supported=("default", "parameter_server"),
                               local_cluster=(args.workers, args.ps)) as dist:
    with dist.scope():
      layout = (distribute.RowLayout.spread(len(vocab)) if args.layout == "spread"
                else None)
      model = model_lib.build_model(config, vocab, table_scope=dist.tables, layout=layout)
    strategy, coordinator = dist.strategy, dist.coordinator
    functions = {}

    def function(upto, window):
      if (upto, window) not in functions:
        if upto == "rpc":
          body = lambda *a: tf.constant(0.0)
        else:
          body = lambda *a: model.train_block_on_rows(
              *a, window=window, upto=None if upto == "full" else upto)

        @tf.function(autograph=False)
        def scheduled(inputs_, lengths, targets, lrs_, step):
          return strategy.run(body, args=(inputs_, lengths, targets, lrs_, step))

        functions[(upto, window)] = scheduled
      return functions[(upto, window)]

    def cluster(upto):
      def run():
        pending = []
        for i, b in enumerate(blocks):
          f = function(upto, model.block_window(b["lengths"]))
          pending.append(coordinator.schedule(f, args=(
              tf.constant(b["inputs"]), tf.constant(b["lengths"]), tf.constant(b["targets"]),
              lrs, tf.constant(i * config.steps_per_call, tf.int64))))
          while len(pending) > 4 * args.workers:
            pending.pop(0).fetch()
        coordinator.join()
        for r in pending:
          r.fetch()
      return run

    print(f"cluster: {args.workers} worker(s) + {args.ps} parameter server(s), "
          f"{args.layout} layout, cumulative phases:")
    for upto in PHASES:
      report(upto, best_of(cluster(upto)))
    print("split (ms/block): " + ", ".join(
        f"{name} {results[name] - (results[PHASES[i - 1]] if i else 0.0):.1f}"
        for i, name in enumerate(PHASES)), flush=True)
  sys.stdout.flush()


if __name__ == "__main__":
  main()
