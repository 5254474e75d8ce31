#!/usr/bin/env python3
"""How evenly a word2vec block's rows fall on the parameter servers: row = id vs the spread
layout parameter-server runs use (distribute.RowLayout.spread).

    .venv/bin/python benchmarks/word2vec_shard_balance.py --corpus=/work/corpora/stress8m.txt
        [--stretches=16384,32768] [--blocks=200] [--shards=2,8,64] [--negatives=1.25]

The corpus is read as `word2vec train` reads it (vocabulary with --min_count, ids sorted by
count, subsampling at --subsample); a block is approximated by `--blocks` consecutive
stretches of N kept tokens (skip-gram's 256 x 64 = 16,384 centres a block, CBOW's 32,768
at its defaults), plus `--negatives` x N negatives drawn from unigram^0.75 as the app's
sampler does. For each block: its distinct ids, their rows under each layout, and the share
of them on the busiest of S shards split as ParameterServerStrategy splits a table ("div":
contiguous ranges, the first ones a row longer). Prints the mean over blocks against the
fair share 1/S: the busiest server's load sets the pace of every block.
"""
import argparse
import tempfile

import numpy as np

from tf_embeddings.data import pipeline
from tf_embeddings.training.distribute import RowLayout
from tf_embeddings.word2vec import config as config_lib
from tf_embeddings.word2vec import inputs


def busiest_share(rows, size, shards):
  """Share of `rows` (distinct) on the busiest of `shards` "div" ranges of `size` rows."""
  ends = np.cumsum([size // shards + (s < size % shards) for s in range(shards)])
  return np.bincount(np.searchsorted(ends, rows, side="right"), minlength=shards).max() / len(rows)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
  p.add_argument("--corpus", required=True)
  p.add_argument("--min_count", type=int, default=config_lib.Config.min_count)
  p.add_argument("--subsample", type=float, default=config_lib.Config.subsample)
  p.add_argument("--stretches", default="16384,32768")
  p.add_argument("--blocks", type=int, default=200)
  p.add_argument("--shards", default="2,8,64")
  p.add_argument("--negatives", type=float, default=1.25,
                 help="negatives drawn per kept token of a block (0: text only)")
  args = p.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    vocab, ids = inputs.prepare_data(config_lib.Config(model_dir=tmp, corpus=args.corpus,
                                                       min_count=args.min_count))
    ids = np.array(ids)
  size = len(vocab)
  rng = np.random.default_rng(0)
  kept = pipeline.subsample(ids, pipeline.keep_probabilities(vocab.counts, args.subsample), rng)
  weights = vocab.counts.astype(np.float64) ** 0.75
  weights[0] = 0.0
  weights /= weights.sum()
  layouts = {"row = id": RowLayout(size), "spread": RowLayout.spread(size)}
  shards = [int(s) for s in args.shards.split(",")]
  print(f"{args.corpus}: {len(ids):,} tokens, {len(kept):,} kept, {size:,} ids; "
        f"spread multiplier {layouts['spread'].multiplier}")
  print("| tokens a block | distinct rows | layout | " +
        " | ".join(f"busiest of {s} (fair {1 / s:.1%})" for s in shards) + " |")
  print("|---|---|---|" + "---|" * len(shards))
  for stretch in (int(n) for n in args.stretches.split(",")):
    count = min(args.blocks, len(kept) // stretch)
    starts = rng.choice(len(kept) // stretch, count, replace=False) * stretch
    shares = {name: np.zeros(len(shards)) for name in layouts}
    distinct = 0
    for start in starts:
      block = kept[start:start + stretch]
      if args.negatives:
        block = np.concatenate([block, rng.choice(size, int(args.negatives * stretch),
                                                  p=weights)])
      unique = np.unique(block)
      distinct += len(unique)
      for name, layout in layouts.items():
        rows = layout.rows_np(unique.astype(np.int64))
        shares[name] += [busiest_share(rows, size, s) for s in shards]
    for name in layouts:
      print(f"| {stretch:,} | {distinct / count:,.0f} | {name} | " +
            " | ".join(f"{x / count:.1%}" for x in shares[name]) + " |")


if __name__ == "__main__":
  main()
