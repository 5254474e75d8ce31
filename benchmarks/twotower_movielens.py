"""MovieLens-100K retrieval benchmark: this project vs EASE, iALS, SVD and most-popular.

Same data and split for every row: MovieLens-100K, every rating a positive,
random 80/20 split (seed 42), as in the TensorFlow Recommenders basic
retrieval tutorial. EASE and iALS (benchmarks/baselines.py) are tuned in the
same run on a validation split carved from the training 80% exactly as the
app's --validation_fraction=0.2 does (fit on the other 80% of it, scored on the
validation 20%, the user's fitting items excluded), then refit with the chosen
parameters on the whole training 80% and scored on the test 20%. The tuning
criterion is the sum of hit@1, 5, 10, 50 and 100 (seen excluded). Figures:
  hit@K excl.         share of test interactions whose item is in the user's top K
                      over ALL items, the user's training items removed;
  top-100 incl.       the same with training items kept in the ranking (how TFRS'
                      FactorizedTopK computes its top-K accuracy);
  NDCG@10, Recall@10  per user, then averaged over users, seen items excluded
                      (RecBole's full-ranking protocol).
The two-tower (default flags) is trained once per seed (--model_seed = --seed =
s for s in --seeds); its row is the mean over seeds and the "worst seed" row the
minimum, so "beats X" means every seed does. iALS is refit with the same seeds.
Throughput: training examples/sec of the steady state (no tracing, no eval).

  .venv/bin/python benchmarks/twotower_movielens.py [--data_dir=DIR] [--seeds=0,1,2]
      [--eval_split=test|validation] [--split_seed=42] [--tfrs_python=PYTHON] [--skip_speed]

--eval_split=validation scores everything on the validation split instead
(two-tower trained with --validation_fraction=0.2, baselines fit on the same
64%): the figures defaults are chosen on. With --tfrs_python (a Python that has
tensorflow-recommenders and tf-keras, e.g. a separate venv), the TFRS basic
retrieval tutorial model is trained in a subprocess on the same split, in the
same run, and scored with the same metric code.

Not a test: numbers depend on the machine and its load (quality figures do not).
"""
import argparse
import dataclasses
import os
import tempfile
import time

# One BLAS thread: iALS solves thousands of small systems, which OpenBLAS threads make
# about 70x slower on 2 shared cores (measured 2026-11-25: 35 s vs 0.5 s per half sweep).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
  os.environ.setdefault(_var, "1")

import numpy as np  # pylint: disable=wrong-import-position
from scipy.sparse.linalg import svds  # pylint: disable=wrong-import-position

import baselines  # pylint: disable=wrong-import-position  (benchmarks/ is the script's dir)
from tf_embeddings.twotower import config as config_lib  # pylint: disable=wrong-import-position
from tf_embeddings.twotower import inputs  # pylint: disable=wrong-import-position
from tf_embeddings.twotower import metrics  # pylint: disable=wrong-import-position
from tf_embeddings.twotower import train as train_lib  # pylint: disable=wrong-import-position

KS = (1, 5, 10, 50, 100)
EASE_LAMBDAS = (100, 200, 300, 500, 700, 1000, 2000)
IALS_GRID = [(dim, reg, alpha) for dim in (64, 128) for reg in (10, 50, 200)
             for alpha in (3, 10, 30)]
IALS_SWEEPS = 15
# Columns: (label, figure key, which ranking).
COLUMNS = [(f"hit@{k} excl.", f"hit@{k}", "exc") for k in KS] + [
    ("top-100 incl.", "hit@100", "inc"), ("NDCG@10", "ndcg@10", "exc"),
    ("Recall@10", "recall@10", "exc")]

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


def figures(query, items, prepared, split):
  """{'inc': metrics seen included, 'exc': seen excluded} of embeddings on a split."""
  data, seen = prepared.eval_split(split)
  return {"inc": metrics.evaluate(query, items, data.users, data.items, None),
          "exc": metrics.evaluate(query, items, data.users, data.items, seen)}


def train_matrix(prepared):
  tr = prepared.train
  return baselines.binary_matrix(tr.users, tr.items, prepared.data.num_users,
                                 prepared.data.num_items)


def most_popular(prepared):
  counts = prepared.train.item_counts().astype(np.float32)
  return np.ones((prepared.data.num_users, 1), np.float32), counts[:, None]


def truncated_svd(prepared, rank=20):
  u, s, vt = svds(train_matrix(prepared), k=rank, random_state=0)
  return (u * s).astype(np.float32), vt.T.astype(np.float32)


def criterion(fig):
  """What the baselines are tuned on: sum of hit@K (seen excluded) over KS."""
  return sum(fig["exc"][f"hit@{k}"] for k in KS)


def tune(fit, grid, tuning):
  """Best grid point of `fit(prepared, params) -> (query, items)` on the validation split."""
  best = None
  for params in grid:
    score = criterion(figures(*fit(tuning, params), tuning, "validation"))
    print(f"  tuning {fit.__name__} {params}: validation sum of hit@K {score:.4f}",
          flush=True)
    if best is None or score > best[0]:
      best = (score, params)
  return best[1]


def fit_ease(prepared, lam):
  return baselines.ease(train_matrix(prepared), lam)


def fit_ials(prepared, params, seed=0):
  dim, reg, alpha = params
  return baselines.ials(train_matrix(prepared), dim, reg, alpha, IALS_SWEEPS, seed)


def mean_figures(runs):
  return {side: {k: float(np.mean([r[side][k] for r in runs])) for k in runs[0][side]}
          for side in ("inc", "exc")}


def min_figures(runs):
  return {side: {k: float(np.min([r[side][k] for r in runs])) for k in runs[0][side]}
          for side in ("inc", "exc")}


def row(name, fig, rate=None):
  cells = [f"{fig[side][key]:.3f}" for _, key, side in COLUMNS]
  cells.append("-" if rate is None else f"{rate:,.0f}")
  return f"| {name} | " + " | ".join(cells) + " |"


def train_two_tower(data_config, model_dir, prepared, split, seed, epochs=None,
                    overrides=None):
  """The default-flag two-tower of one seed (with `overrides`, {setting: value}, if any):
  (figures, examples/sec, wall seconds, epochs)."""
  settings = dict(dataclasses.asdict(data_config), eval_every_epoch=False, seed=seed,
                  model_seed=seed, **(overrides or {}))
  if epochs:
    settings["epochs"] = epochs
  config = config_lib.resolve(model_dir, **settings)
  stats = {}
  start = time.monotonic()
  two_tower, _ = train_lib.train(config, prepared, resume=False, stats=stats)
  wall = time.monotonic() - start
  fig = figures(two_tower.query_tower.embed_all(), two_tower.item_tower.embed_all(),
                prepared, split)
  return fig, stats["examples_per_sec"], wall, config.train.epochs


def _setting_value(text):
  """A --set value: int, float, true/false, or the text."""
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return {"true": True, "false": False}.get(text.lower(), text)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--data_dir", default="", help="local MovieLens-100K (any format); "
                 "default: fetch and cache")
  p.add_argument("--epochs", type=int, default=None, help="override the default epochs")
  p.add_argument("--seeds", default="0,1,2", help="two-tower and iALS seeds")
  p.add_argument("--split_seed", type=int, default=42,
                 help="seed of the random 80/20 split (42: the table of the README; others "
                      "ask whether a gap between rows is the split's or the models')")
  p.add_argument("--eval_split", choices=("test", "validation"), default="test")
  p.add_argument("--speed_epochs", type=int, default=3, help="epochs of the TFRS-size run")
  p.add_argument("--skip_speed", action="store_true")
  p.add_argument("--set", action="append", default=[], metavar="SETTING=VALUE",
                 help="a two-tower setting other than its default (as the flag without --, "
                      "e.g. logq_weight=1.1; repeatable): the two-tower rows say so")
  p.add_argument("--tfrs_python", default="", help="a Python with tensorflow-recommenders "
                 "and tf-keras: train the TFRS tutorial model in the same run")
  args = p.parse_args()
  seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
  if not seeds:
    p.error("--seeds names no seed")
  args.set_pairs = []
  for item in args.set:
    key, sep, text = item.partition("=")
    if not sep:
      p.error(f"--set {item}: expected SETTING=VALUE")
    args.set_pairs.append((key, text))
  overrides = {key: _setting_value(text) for key, text in args.set_pairs}

  test_config = config_lib.DataConfig(dataset="movielens-100k", data_dir=args.data_dir,
                                      split_seed=args.split_seed)
  tuning_config = dataclasses.replace(test_config, validation_fraction=0.2)
  tuning = inputs.prepare(tuning_config)
  if args.eval_split == "validation":
    data_config, prepared, split = tuning_config, tuning, "validation"
  else:
    data_config, prepared, split = test_config, inputs.prepare(test_config), "test"

  start = time.monotonic()
  lam = tune(fit_ease, EASE_LAMBDAS, tuning)
  ials_params = tune(fit_ials, IALS_GRID, tuning)
  tuning_wall = time.monotonic() - start

  rows = {}
  rows["most popular"] = figures(*most_popular(prepared), prepared, split)
  rows["truncated SVD, rank 20"] = figures(*truncated_svd(prepared), prepared, split)
  rows[f"EASE (lambda {lam})"] = figures(*fit_ease(prepared, lam), prepared, split)
  dim, reg, alpha = ials_params
  ials_runs = [figures(*fit_ials(prepared, ials_params, s), prepared, split) for s in seeds]
  rows[f"iALS (dim {dim}, reg {reg}, alpha {alpha}, {IALS_SWEEPS} sweeps; mean of "
       f"{len(seeds)} seeds)"] = mean_figures(ials_runs)
  baseline_names = list(rows)

  lines = ["| model | " + " | ".join(c[0] for c in COLUMNS) + " | train ex/s |",
           "|" + "---|" * (len(COLUMNS) + 2)]
  lines += [row(name, fig) for name, fig in rows.items()]
  with tempfile.TemporaryDirectory() as tmp:
    runs, rates, walls = [], [], []
    for s in seeds:
      fig, rate, wall, epochs = train_two_tower(data_config, os.path.join(tmp, f"s{s}"),
                                                prepared, split, s, args.epochs, overrides)
      print(f"  twotower seed {s}: " + ", ".join(
          f"{label} {fig[side][key]:.3f}" for label, key, side in COLUMNS), flush=True)
      runs.append(fig)
      rates.append(rate)
      walls.append(wall)
    two_tower = mean_figures(runs)
    worst = min_figures(runs)
    flags_used = "default flags" + "".join(f", --{k}={v}" for k, v in args.set_pairs)
    lines.append(row(f"twotower, {flags_used} ({epochs} epochs, {np.mean(walls):.0f}s "
                     f"wall; mean of {len(seeds)} seeds)", two_tower, float(np.mean(rates))))
    lines.append(row(f"twotower, {flags_used}, worst seed per column", worst))
    if not args.skip_speed:
      speed = config_lib.resolve(
          os.path.join(tmp, "speed"), **dataclasses.asdict(data_config),
          embedding_dim=32, tower_layers=(), use_features=False, ensemble=1,
          # Learning rate 0.05: at 27 steps the default 0.01 is too slow (0.144 top-100).
          batch_size=8192, learning_rate=0.05, epochs=args.speed_epochs,
          eval_every_epoch=False, temperature=0.2, weight_decay=0.0, average_momentum=0.0)
      stats = {}
      tt, _ = train_lib.train(speed, prepared, resume=False, stats=stats)
      fig = figures(tt.query_tower.embed_all(), tt.item_tower.embed_all(), prepared, split)
      lines.append(row(f"twotower, TFRS tutorial size (id-only, dim 32, batch 8192, "
                       f"{args.speed_epochs} epochs, lr 0.05)", fig, stats["examples_per_sec"]))
    if args.tfrs_python:
      q, it, rate = tfrs_peer(args.tfrs_python, prepared, tmp)
      lines.append(row("TFRS 0.7.7 basic retrieval tutorial (3 epochs, same run)",
                       figures(q, it, prepared, split), rate))

  print(f"\nMovieLens-100K, random 80/20 (seed {args.split_seed}), every rating a positive, "
        f"scored on the {split} split; {len(prepared.train)} train / "
        f"{len(prepared.eval_split(split)[0])} {split} interactions; baselines tuned on the "
        f"validation split in {tuning_wall:.0f}s")
  print("\n".join(lines))
  verdict = []
  for label, key, side in COLUMNS:
    best_name = max(baseline_names, key=lambda n: rows[n][side][key])
    best = rows[best_name][side][key]
    won = worst[side][key] > best
    verdict.append(f"{label}: {'beats' if won else 'does NOT beat'} {best_name.split(' (')[0]}"
                   f" ({worst[side][key]:.3f} worst seed vs {best:.3f})")
  print("Two-tower (every seed) vs the best baseline per column:\n  " + "\n  ".join(verdict))


if __name__ == "__main__":
  main()
