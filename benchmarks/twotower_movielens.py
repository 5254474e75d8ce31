"""MovieLens-100K retrieval benchmark: this project vs most-popular and truncated SVD.

Same data and split for every row: MovieLens-100K, every rating a positive,
random 80/20 split (seed 42), as in the TensorFlow Recommenders basic
retrieval tutorial. Figures:
  top-K (seen incl.)  share of test interactions whose item is in the user's top K
                      over ALL items, training items included (how TFRS'
                      FactorizedTopK computes its top-K accuracy);
  hit@K (seen excl.)  the same with the user's training items removed from the ranking.
Throughput: training examples/sec of the steady state (no tracing, no eval),
for the default flags and for the TFRS tutorial model size (id-only towers,
dim 32, batch 8192, in-batch softmax).

  .venv/bin/python benchmarks/twotower_movielens.py [--data_dir=DIR] [--epochs=N]
      [--tfrs_python=PYTHON]

With --tfrs_python (a Python that has tensorflow-recommenders and tf-keras, e.g. a
separate venv: they need tf-keras, which the project venv avoids), the TFRS basic
retrieval tutorial model is trained in a subprocess on the same split, in the same
run, and scored with the same metric code.

Not a test: numbers depend on the machine and its load.
"""
import argparse
import dataclasses
import os
import sys
import tempfile
import time

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twotower import config as config_lib  # pylint: disable=wrong-import-position
from twotower import inputs  # pylint: disable=wrong-import-position
from twotower import metrics  # pylint: disable=wrong-import-position
from twotower import train as train_lib  # pylint: disable=wrong-import-position

KS = (1, 5, 10, 50, 100)

# The TensorFlow Recommenders basic retrieval tutorial (id towers of dim 32,
# Adagrad 0.1, batch 8192, 3 epochs, metrics off while training), fed our split.
# argv: input .npz (train_users, train_items, num_users, num_items), output .npz.
TFRS_PEER = r"""
import os, sys, time
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs
tf.random.set_seed(0)
d = np.load(sys.argv[1])
uvocab = [str(u) for u in range(int(d["num_users"]))]
ivocab = [str(i) for i in range(int(d["num_items"]))]
train = tf.data.Dataset.from_tensor_slices({
    "user_id": d["train_users"].astype(str), "movie_title": d["train_items"].astype(str)})
user_model = tf.keras.Sequential([
    tf.keras.layers.StringLookup(vocabulary=uvocab, mask_token=None),
    tf.keras.layers.Embedding(len(uvocab) + 1, 32)])
movie_model = tf.keras.Sequential([
    tf.keras.layers.StringLookup(vocabulary=ivocab, mask_token=None),
    tf.keras.layers.Embedding(len(ivocab) + 1, 32)])
movies = tf.data.Dataset.from_tensor_slices(np.array(ivocab))
task = tfrs.tasks.Retrieval(metrics=tfrs.metrics.FactorizedTopK(
    candidates=movies.batch(128).map(movie_model)))
class Model(tfrs.Model):
  def __init__(self):
    super().__init__()
    self.user_model, self.movie_model, self.task = user_model, movie_model, task
  def compute_loss(self, features, training=False):
    return self.task(self.user_model(features["user_id"]),
                     self.movie_model(features["movie_title"]), compute_metrics=not training)
model = Model()
model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=0.1))
cached = train.shuffle(100_000, seed=42, reshuffle_each_iteration=False).batch(8192).cache()
model.fit(cached, epochs=1, verbose=0)  # first epoch: tracing and cache fill
start = time.perf_counter()
model.fit(cached, epochs=2, verbose=0)
rate = 2 * len(d["train_users"]) / (time.perf_counter() - start)
np.savez(sys.argv[2], query=user_model(np.array(uvocab)).numpy(),
         items=movie_model(np.array(ivocab)).numpy(), rate=rate)
"""


def tfrs_peer(python, prepared, tmp):
  """Trains the TFRS tutorial model with `python`; returns (query, items, ex/s)."""
  import subprocess  # pylint: disable=import-outside-toplevel
  src, out = os.path.join(tmp, "tfrs_in.npz"), os.path.join(tmp, "tfrs_out.npz")
  np.savez(src, train_users=prepared.train.users, train_items=prepared.train.items,
           num_users=prepared.data.num_users, num_items=prepared.data.num_items)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  subprocess.run([python, "-c", TFRS_PEER, src, out], check=True, env=env)
  r = np.load(out)
  return r["query"], r["items"], float(r["rate"])


def figures(query, items, prepared):
  test, seen = prepared.eval_split("test")
  inc = metrics.evaluate(query, items, test.users, test.items, None)
  exc = metrics.evaluate(query, items, test.users, test.items, seen)
  return inc, exc


def most_popular(prepared):
  counts = prepared.train.item_counts().astype(np.float32)
  return np.ones((prepared.data.num_users, 1), np.float32), counts[:, None]


def truncated_svd(prepared, rank=20):
  tr = prepared.train
  m = sp.csr_matrix((np.ones(len(tr)), (tr.users, tr.items)),
                    shape=(prepared.data.num_users, prepared.data.num_items))
  m.data[:] = 1.0  # 0/1 matrix
  u, s, vt = svds(m, k=rank, random_state=0)
  return (u * s).astype(np.float32), vt.T.astype(np.float32)


def row(name, inc, exc, rate=None):
  cells = [f"{inc[f'hit@{k}']:.3f}" for k in KS] + [f"{exc[f'hit@{k}']:.3f}" for k in KS]
  cells.append("-" if rate is None else f"{rate:,.0f}")
  return f"| {name} | " + " | ".join(cells) + " |"


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--data_dir", default="", help="local MovieLens-100K (any format); "
                 "default: fetch and cache")
  p.add_argument("--epochs", type=int, default=None, help="override the default epochs")
  p.add_argument("--speed_epochs", type=int, default=3, help="epochs of the TFRS-size run")
  p.add_argument("--skip_speed", action="store_true")
  p.add_argument("--tfrs_python", default="", help="a Python with tensorflow-recommenders "
                 "and tf-keras: train the TFRS tutorial model in the same run")
  args = p.parse_args()

  data_config = config_lib.DataConfig(dataset="movielens-100k", data_dir=args.data_dir)
  prepared = inputs.prepare(data_config)
  lines = []
  header = ("| model | " + " | ".join(f"top-{k} incl." for k in KS) + " | "
            + " | ".join(f"hit@{k} excl." for k in KS) + " | train ex/s |")
  lines.append(header)
  lines.append("|" + "---|" * (2 + 2 * len(KS)))
  inc, exc = figures(*most_popular(prepared), prepared)
  lines.append(row("most popular", inc, exc))
  inc, exc = figures(*truncated_svd(prepared), prepared)
  lines.append(row("truncated SVD, rank 20", inc, exc))

  with tempfile.TemporaryDirectory() as tmp:
    config = config_lib.Config(os.path.join(tmp, "default"), data_config)
    train = dataclasses.replace(config.train, eval_every_epoch=False)
    if args.epochs:
      train = dataclasses.replace(train, epochs=args.epochs)
    config = dataclasses.replace(config, train=train)
    stats = {}
    start = time.monotonic()
    two_tower, _ = train_lib.train(config, prepared, resume=False, stats=stats)
    wall = time.monotonic() - start
    inc, exc = figures(two_tower.query_tower.embed_all(), two_tower.item_tower.embed_all(),
                       prepared)
    lines.append(row(f"twotower, default flags ({config.train.epochs} epochs, {wall:.0f}s "
                     "wall)", inc, exc, stats["examples_per_sec"]))
    if not args.skip_speed:
      speed = config_lib.Config(
          os.path.join(tmp, "speed"), data_config,
          config_lib.ModelConfig(embedding_dim=32, tower_layers=(), use_features=False),
          # Learning rate 0.05: at 27 steps the default 0.01 is too slow (0.144 top-100).
          dataclasses.replace(config_lib.TrainConfig(), batch_size=8192, learning_rate=0.05,
                              epochs=args.speed_epochs, eval_every_epoch=False))
      stats = {}
      two_tower, _ = train_lib.train(speed, prepared, resume=False, stats=stats)
      inc, exc = figures(two_tower.query_tower.embed_all(), two_tower.item_tower.embed_all(),
                         prepared)
      lines.append(row(f"twotower, TFRS tutorial size (id-only, dim 32, batch 8192, "
                       f"{args.speed_epochs} epochs, lr 0.05)", inc, exc,
                       stats["examples_per_sec"]))
    if args.tfrs_python:
      q, it, rate = tfrs_peer(args.tfrs_python, prepared, tmp)
      inc, exc = figures(q, it, prepared)
      lines.append(row("TFRS 0.7.7 basic retrieval tutorial (3 epochs, same run)", inc, exc,
                       rate))
  print("\nMovieLens-100K, random 80/20 (seed 42), every rating a positive; "
        f"{len(prepared.train)} train / {len(prepared.test)} test interactions")
  print("\n".join(lines))
  print("TFRS 0.7.7 basic retrieval tutorial, same protocol (MEASURED.md, not re-measured "
        "here): top-100 incl. 0.240, hit@100 excl. 0.339, hit@10 excl. 0.058, ~37.5k ex/s")


if __name__ == "__main__":
  main()
