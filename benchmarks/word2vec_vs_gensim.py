"""The whole `word2vec train` command of this project vs gensim 4.4's whole `Word2Vec(...)`.

Same corpus, same shared settings, same machine, alternated in one invocation. For each model
(skip-gram, CBOW) it prints, as the user pays for them:

* wall-clock words/s of both: raw tokens x epochs / seconds, the way gensim, word2vec.c and
  fastText count. Ours is a subprocess `python -m word2vec train` (process start, imports,
  vocabulary, encoding, compilation, training, evaluation, checkpoints, export: everything);
  gensim's is the `Word2Vec(LineSentence(path), ...)` call (its vocabulary scan included);
* their ratio (median of the ratios of adjacent runs), and ours training-only (the loop less
  compilation and checkpoints, from the run's timings.json) as a column;
* analogy accuracy (3CosAdd, 30k most frequent words), WordSim-353 and SimLex-999 Spearman of
  both, computed with the same code (word2vec/intrinsic.py);
* where our wall time went: start-up (process + imports), vocabulary, encoding, set-up,
  compilation, training, evaluation, checkpoints, export (timings.json of the run).

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/word2vec_vs_gensim.py --corpus=PATH [--repeats=3]

Both read the corpus through this project's tokenizer (text8: lowercase letters), written once
to a temporary file, one line per input line (gensim's LineSentence cuts lines at 10,000
tokens). Shared settings, the only flags ours gets: dim 100, window 5, subsample 1e-3,
min_count 5, 3 epochs; everything else is the app's default for the model (negatives,
batch, learning rate, held-out 1% of the text, evaluation, checkpoints). gensim: 5 negatives
per pair, 2 workers. Ours trains on the 99% of the tokens not held out and is credited with
those only.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# pylint: disable=wrong-import-position
import numpy as np

from data import corpus as corpus_lib
from data import tokenizer as tokenizer_lib
from data import evalsets
from word2vec import intrinsic

PHASES = ("startup", "vocabulary", "encoding", "setup", "compilation", "training",
          "evaluation", "checkpoints", "export")
EVAL_FRACTION = 0.01  # the app's default --eval_fraction


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


def ours_command(path, model, model_dir, args):
  """`python -m word2vec train` with the shared settings only (the app's defaults else)."""
  return [sys.executable, "-m", "word2vec", "train", f"--corpus={path}", f"--model={model}",
          f"--model_dir={model_dir}", f"--embedding_dim={args.dim}", f"--window={args.window}",
          "--subsample=1e-3", "--min_count=5", f"--epochs={args.epochs}",
          f"--seed={args.seed}", "--words="]


def run_ours(path, model, args, n_tokens):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from data.vocab import Vocabulary  # pylint: disable=import-outside-toplevel
  model_dir = tempfile.mkdtemp(prefix=f"bench_{model}_")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
  start = time.perf_counter()
  res = subprocess.run(ours_command(path, model, model_dir, args), env=env, cwd=ROOT,
                       capture_output=True, text=True, check=False)
  seconds = time.perf_counter() - start
  if res.returncode != 0:
    shutil.rmtree(model_dir, ignore_errors=True)
    raise SystemExit(f"word2vec train failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
  with open(os.path.join(model_dir, "timings.json"), encoding="utf-8") as f:
    timings = json.load(f)
  vocab = Vocabulary.load(os.path.join(model_dir, "vocab.tsv"))
  reader = tf.train.load_checkpoint(os.path.join(model_dir, "checkpoints"))
  vectors = reader.get_tensor("input_embeddings/.ATTRIBUTES/VARIABLE_VALUE")
  shutil.rmtree(model_dir, ignore_errors=True)
  trained = (n_tokens - int(n_tokens * EVAL_FRACTION)) * args.epochs
  return {"seconds": seconds, "timings": timings, "words_per_sec": trained / seconds,
          "train_words_per_sec": trained / max(timings["training"], 1e-9),
          **quality(vectors, vocab.words, vocab.index)}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
  p.add_argument("--corpus", default="", help="corpus spec (default: bundled SOTU)")
  p.add_argument("--models", default="skipgram,cbow")
  p.add_argument("--epochs", type=int, default=3)
  p.add_argument("--dim", type=int, default=100)
  p.add_argument("--window", type=int, default=5)
  p.add_argument("--threads", type=int, default=2, help="gensim's workers")
  p.add_argument("--repeats", type=int, default=1,
                 help="run ours and gensim alternately this many times; the table gives "
                 "medians (a shared machine's speed drifts by 2x within minutes)")
  p.add_argument("--seed", type=int, default=1)
  args = p.parse_args()
  tmp = tempfile.mkdtemp(prefix="w2v_bench_")
  path = os.path.join(tmp, "corpus.txt")
  n_tokens = tokenized_copy(args.corpus, path)
  print(f"corpus: {args.corpus or 'bundled SOTU'}, {n_tokens:,} tokens, {args.epochs} epochs;"
        f" gensim {args.threads} workers; ours: {' '.join(ours_command('CORPUS', 'MODEL', 'DIR', args)[1:])}")
  rows = []
  for model in args.models.split(","):
    ours, theirs, ratios = [], [], []
    for r in range(args.repeats):
      ours.append(run_ours(path, model, args, n_tokens))
      theirs.append(run_gensim(path, int(model == "skipgram"), args, n_tokens))
      ratios.append(ours[-1]["words_per_sec"] / theirs[-1]["words_per_sec"])
      t = ours[-1]["timings"]
      print(f"{model} run {r + 1}: ours {ours[-1]['words_per_sec']:,.0f} words/s wall "
            f"({ours[-1]['seconds']:.1f} s; training only {ours[-1]['train_words_per_sec']:,.0f}),"
            f" gensim {theirs[-1]['words_per_sec']:,.0f} ({theirs[-1]['seconds']:.1f} s), "
            f"ratio {ratios[-1]:.2f}; analogy {ours[-1]['analogy']:.3f} vs "
            f"{theirs[-1]['analogy']:.3f}", flush=True)
      print("  ours: " + ", ".join(f"{k} {t[k]:.1f}" for k in PHASES) +
            f", other {ours[-1]['seconds'] - sum(t[k] for k in PHASES):.1f} s", flush=True)
    rows.append((model, ours, theirs, ratios))
  med = lambda runs, key: float(np.median([x[key] for x in runs]))
  print()
  print(f"medians of {args.repeats} alternated run(s), {n_tokens:,} tokens x {args.epochs} "
        "epochs:")
  print("| mode | words/s ours (wall) | gensim (wall) | ratio | ours training only | analogy "
        "ours | gensim | WS-353 ours | gensim | SimLex ours | gensim |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for model, o, g, ratios in rows:
    print(f"| {model} | {med(o, 'words_per_sec'):,.0f} | {med(g, 'words_per_sec'):,.0f} | "
          f"{float(np.median(ratios)):.2f} | {med(o, 'train_words_per_sec'):,.0f} | "
          f"{med(o, 'analogy'):.3f} | {med(g, 'analogy'):.3f} | {med(o, 'wordsim353'):.3f} | "
          f"{med(g, 'wordsim353'):.3f} | {med(o, 'simlex999'):.3f} | "
          f"{med(g, 'simlex999'):.3f} |")
  print()
  print("where our wall time went (seconds, medians; other = wall less the phases):")
  print("| mode | wall | " + " | ".join(PHASES) + " | other | gensim wall |")
  print("|---|---|" + "---|" * len(PHASES) + "---|---|")
  for model, o, g, _ in rows:
    phases = [float(np.median([x["timings"][k] for x in o])) for k in PHASES]
    other = float(np.median([x["seconds"] - sum(x["timings"][k] for k in PHASES) for x in o]))
    print(f"| {model} | {med(o, 'seconds'):.1f} | " + " | ".join(f"{v:.1f}" for v in phases) +
          f" | {other:.1f} | {med(g, 'seconds'):.1f} |")
  shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
