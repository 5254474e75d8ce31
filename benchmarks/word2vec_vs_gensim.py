"""word2vec of this project vs gensim 4.4 on the same corpus, same settings, same machine.

Prints, for skip-gram and CBOW, words/sec of both (vocabulary building included for gensim,
vocabulary + encoding included for us as `total`, training alone as `train`), their ratio,
and analogy accuracy (3CosAdd, 30k most frequent words), WordSim-353 and SimLex-999 Spearman
of both, all computed with the same code (word2vec/intrinsic.py).

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/word2vec_vs_gensim.py --corpus=PATH [--epochs=3]

Both read the corpus through this project's tokenizer (text8: lowercase letters), written once
to a temporary file, one line per input line (gensim's LineSentence, lines cut at 10,000
tokens). Settings: dim 100, window 5, subsample 1e-3, min_count 5, 2 threads; gensim uses 5
negatives per pair, we use --num_sampled negatives per group of --group_size pairs (the app's
defaults: 8 for skip-gram + nce, 16 for CBOW + sampled softmax, per 64 examples).
`--repeats=N` alternates the two N times and reports medians; the ratio column is the median
of the ratios of adjacent runs.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=wrong-import-position
import numpy as np
from absl import logging

from data import corpus as corpus_lib
from data import tokenizer as tokenizer_lib
from data import evalsets
from word2vec import intrinsic
from word2vec.config import Config


def tokenized_copy(spec, path):
  corpus = corpus_lib.resolve_corpus(spec or None, tokenizer="text8")
  n = 0
  with open(path, "w", encoding="utf-8") as out:
    for line in corpus.iter_lines():
      tokens = tokenizer_lib.tokenize(line, "text8")
      if tokens:
        out.write(" ".join(tokens) + "\n")
        n += len(tokens)
  return n


def quality(vectors, words, index):
  analogies = evalsets.load_analogies()
  out = {"analogy": intrinsic.analogy_accuracy(vectors, words, analogies, 30000)["accuracy"]}
  for name in ("wordsim353", "simlex999"):
    out[name] = intrinsic.similarity_spearman(vectors, index, evalsets.load_similarity(name))[0]
  return out


def run_gensim(path, sg, args, n_tokens):
  from gensim.models import Word2Vec  # pylint: disable=import-outside-toplevel
  from gensim.models.word2vec import LineSentence  # pylint: disable=import-outside-toplevel
  start = time.perf_counter()
  m = Word2Vec(LineSentence(path), vector_size=args.dim, window=args.window, negative=5,
               sample=1e-3, min_count=5, epochs=args.epochs, workers=args.threads, sg=sg,
               seed=args.seed)
  seconds = time.perf_counter() - start
  words = list(m.wv.index_to_key)
  vectors = np.vstack([np.zeros(args.dim, np.float32), m.wv.vectors])
  index = {w: i + 1 for i, w in enumerate(words)}
  return {"seconds": seconds, "words_per_sec": n_tokens * args.epochs / seconds,
          **quality(vectors, ["<unk>"] + words, index)}


def run_ours(path, model, args, n_tokens):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from word2vec import train as train_lib  # pylint: disable=import-outside-toplevel
  if not tf.config.threading.get_intra_op_parallelism_threads():
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
  model_dir = tempfile.mkdtemp(prefix=f"bench_{model}_")
  loss = "nce" if model == "skipgram" else "sampled_softmax"
  config = Config(model_dir=model_dir, corpus=path, model=model, loss=loss,
                  subtract_log_q=model != "skipgram", train_biases=model != "skipgram",
                  embedding_dim=args.dim, window=args.window, epochs=args.epochs,
                  num_sampled=args.num_sampled,
                  group_size=args.group_size,
                  batch_size=args.batch_size, eval_fraction=0.0, seed=args.seed,
                  words=())
  start = time.perf_counter()
  figures = train_lib.train(config)
  seconds = time.perf_counter() - start
  from data.vocab import Vocabulary  # pylint: disable=import-outside-toplevel
  vocab = Vocabulary.load(os.path.join(model_dir, "vocab.tsv"))
  _, _, m, _ = train_lib.restore(config)
  vectors = m.input_embeddings.numpy()
  shutil.rmtree(model_dir, ignore_errors=True)
  return {"seconds": seconds, "train_seconds": figures["train_seconds"],
          "words_per_sec": n_tokens * args.epochs / figures["train_seconds"],
          **quality(vectors, vocab.words, vocab.index)}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--corpus", default="", help="corpus spec (default: bundled SOTU)")
  p.add_argument("--models", default="skipgram,cbow")
  p.add_argument("--epochs", type=int, default=3)
  p.add_argument("--dim", type=int, default=100)
  p.add_argument("--window", type=int, default=5)
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--num_sampled", type=int, default=0,
                 help="ours: negatives per group (0 = the app's default for the loss)")
  p.add_argument("--repeats", type=int, default=1,
                 help="run ours and gensim alternately this many times; the table gives "
                 "medians (a shared machine's speed drifts by 2x within minutes)")
  p.add_argument("--group_size", type=int, default=64)
  p.add_argument("--batch_size", type=int, default=0, help="0 = the app's default")
  p.add_argument("--seed", type=int, default=1)
  args = p.parse_args()
  logging.set_verbosity(logging.WARNING)
  tmp = tempfile.mkdtemp(prefix="w2v_bench_")
  path = os.path.join(tmp, "corpus.txt")
  n_tokens = tokenized_copy(args.corpus, path)
  print(f"corpus: {args.corpus or 'bundled SOTU'}, {n_tokens:,} tokens, {args.epochs} epochs,"
        f" {args.threads} threads")
  rows = []
  for model in args.models.split(","):
    ours, theirs, ratios = [], [], []
    for r in range(args.repeats):
      ours.append(run_ours(path, model, args, n_tokens))
      theirs.append(run_gensim(path, int(model == "skipgram"), args, n_tokens))
      ratios.append(ours[-1]["words_per_sec"] / theirs[-1]["words_per_sec"])
      print(f"{model} run {r + 1}: ours {ours[-1]['words_per_sec']:,.0f} words/s (train), "
            f"gensim {theirs[-1]['words_per_sec']:,.0f}, ratio {ratios[-1]:.2f}; analogy "
            f"{ours[-1]['analogy']:.3f} vs {theirs[-1]['analogy']:.3f}", flush=True)
    rows.append((model, ours, theirs, ratios))
  med = lambda runs, key: float(np.median([x[key] for x in runs]))
  print()
  print(f"medians of {args.repeats} alternated run(s):")
  print("| mode | words/s ours (train) | ours (total) | gensim | ratio | analogy ours | gensim "
        "| WS-353 ours | gensim | SimLex ours | gensim |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for model, o, g, ratios in rows:
    total_rate = float(np.median([n_tokens * args.epochs / x["seconds"] for x in o]))
    print(f"| {model} | {med(o, 'words_per_sec'):,.0f} | {total_rate:,.0f} | "
          f"{med(g, 'words_per_sec'):,.0f} | {float(np.median(ratios)):.2f} | "
          f"{med(o, 'analogy'):.3f} | {med(g, 'analogy'):.3f} | {med(o, 'wordsim353'):.3f} | "
          f"{med(g, 'wordsim353'):.3f} | {med(o, 'simlex999'):.3f} | "
          f"{med(g, 'simlex999'):.3f} |")
  shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
