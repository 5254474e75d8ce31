"""The whole `word2vec train` command of this project vs gensim 4.4's whole `Word2Vec(...)`.

Same corpus, same shared settings, same machine, alternated in one invocation. For each model
(skip-gram, CBOW) it prints, as the user pays for them:

* wall-clock words/s of both: raw tokens x epochs / seconds, the way gensim, word2vec.c and
  fastText count. Ours is a subprocess `python -m tf_embeddings.word2vec train` (process start, imports,
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
        [--models=skipgram,cbow] [--eval_every_epochs=N]

(--eval_every_epochs=N is passed to ours; each run line then gives the sampled evaluations
during training as a share of the training time, timings.json's
evaluation_during_training.)

Both read the corpus through this project's tokenizer (text8: lowercase letters), written once
to a temporary file, one line per input line (gensim's LineSentence cuts lines at 10,000
tokens). Shared settings, the only flags ours gets: dim 100, window 5, subsample 1e-3,
min_count 5, 3 epochs; everything else is the app's default for the model (negatives,
batch, learning rate, held-out 1% of the text, evaluation, checkpoints). gensim: 5 negatives
per pair, 2 workers, timed around the call inside its own process. Ours trains on the 99% of
the tokens not held out and is credited with those only. Each side runs in its own process,
whose peak RSS (os.wait4) is printed beside our parameter bytes (input + output tables).

A big-vocabulary row (issue 9 section 3): `--synthetic=10e6,1.15e6,0.3 --dim=300 --epochs=1
--models=skipgram` generates 10M Zipfian tokens (exponent 0.3) over 1.15M words, about 1M of
them seen 5 times or more (data/synthetic.py write_zipf_corpus).
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

# pylint: disable=wrong-import-position
import numpy as np

from tf_embeddings.data import corpus as corpus_lib
from tf_embeddings.data import tokenizer as tokenizer_lib
from tf_embeddings.data import evalsets
from tf_embeddings.data import synthetic
from tf_embeddings.word2vec import intrinsic
from tf_embeddings.word2vec.config import Config
from tf_embeddings.word2vec.run import PHASES  # timings.json's phases, in order
EVAL_FRACTION = Config(model_dir="").eval_fraction  # the app's default --eval_fraction


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


GENSIM_CHILD = r"""
import json, sys, time
import numpy as np
from gensim.models import Word2Vec
from gensim.models.word2vec import LineSentence
path, out, dim, window, epochs, workers, sg, seed = sys.argv[1:9]
start = time.perf_counter()
m = Word2Vec(LineSentence(path), vector_size=int(dim), window=int(window), negative=5,
             sample=1e-3, min_count=5, epochs=int(epochs), workers=int(workers), sg=int(sg),
             seed=int(seed))
seconds = time.perf_counter() - start
np.save(out + ".npy", m.wv.vectors)
with open(out + ".json", "w") as f:
  json.dump({"seconds": seconds, "words": list(m.wv.index_to_key)}, f)
"""


def run_child(argv, log_path):
  """Runs argv; returns (exit status, peak RSS in MB) of that process alone (os.wait4)."""
  with open(log_path, "w", encoding="utf-8") as log:
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=os.environ)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
  return proc.returncode, usage.ru_maxrss / 1024


def run_gensim(path, sg, args, n_tokens, tmp):
  """gensim's whole Word2Vec(LineSentence(path), ...) call, timed inside its own process."""
  out = os.path.join(tmp, "gensim")
  code, rss = run_child([sys.executable, "-c", GENSIM_CHILD, path, out, str(args.dim),
                         str(args.window), str(args.epochs), str(args.threads), str(sg),
                         str(args.seed)], out + ".log")
  if code != 0:
    with open(out + ".log", encoding="utf-8") as f:
      raise SystemExit(f"gensim failed (exit {code}):\n{f.read()[-3000:]}")
  with open(out + ".json", encoding="utf-8") as f:
    meta = json.load(f)
  words = meta["words"]
  vectors = np.load(out + ".npy")
  vectors = np.vstack([np.zeros((1, vectors.shape[1]), np.float32), vectors])
  index = {w: i + 1 for i, w in enumerate(words)}
  seconds = meta["seconds"]
  return {"seconds": seconds, "words_per_sec": n_tokens * args.epochs / seconds,
          "peak_rss_mb": rss, **quality(vectors, ["<unk>"] + words, index)}


def ours_command(path, model, model_dir, args):
  """`python -m tf_embeddings.word2vec train` with the shared settings only (the app's defaults else)."""
  return [sys.executable, "-m", "tf_embeddings.word2vec", "train", f"--corpus={path}", f"--model={model}",
          f"--model_dir={model_dir}", f"--embedding_dim={args.dim}", f"--window={args.window}",
          "--subsample=1e-3", "--min_count=5", f"--epochs={args.epochs}",
          f"--seed={args.seed}", "--words="] + (
              [] if args.eval_every_epochs is None else
              [f"--eval_every_epochs={args.eval_every_epochs}"])


def run_ours(path, model, args, n_tokens, tmp):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from tf_embeddings.data.vocab import Vocabulary  # pylint: disable=import-outside-toplevel
  model_dir = tempfile.mkdtemp(prefix=f"bench_{model}_", dir=tmp)
  log = os.path.join(tmp, "ours.log")
  start = time.perf_counter()
  code, rss = run_child(ours_command(path, model, model_dir, args), log)
  seconds = time.perf_counter() - start
  if code != 0:
    shutil.rmtree(model_dir, ignore_errors=True)
    with open(log, encoding="utf-8") as f:
      raise SystemExit(f"word2vec train failed (exit {code}):\n{f.read()[-3000:]}")
  with open(os.path.join(model_dir, "timings.json"), encoding="utf-8") as f:
    timings = json.load(f)
  vocab = Vocabulary.load(os.path.join(model_dir, "vocab.tsv"))
  reader = tf.train.load_checkpoint(os.path.join(model_dir, "checkpoints"))
  vectors = reader.get_tensor("input_embeddings/.ATTRIBUTES/VARIABLE_VALUE")
  shutil.rmtree(model_dir, ignore_errors=True)
  trained = (n_tokens - int(n_tokens * EVAL_FRACTION)) * args.epochs
  return {"seconds": seconds, "timings": timings, "words_per_sec": trained / seconds,
          "peak_rss_mb": rss, "parameter_mb": 2 * vectors.nbytes / 1e6,
          "train_words_per_sec": trained / max(timings["training"], 1e-9),
          **quality(vectors, vocab.words, vocab.index)}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
  p.add_argument("--corpus", default="", help="corpus spec (default: bundled SOTU)")
  p.add_argument("--synthetic", default="", help="TOKENS,DISTINCT,EXPONENT: instead of "
                 "--corpus, a generated Zipfian corpus (data/synthetic.py); "
                 "10e6,1.15e6,0.3 has about 1M words seen 5 times or more")
  p.add_argument("--models", default="skipgram,cbow")
  p.add_argument("--epochs", type=int, default=3)
  p.add_argument("--dim", type=int, default=100)
  p.add_argument("--window", type=int, default=5)
  p.add_argument("--threads", type=int, default=2, help="gensim's workers")
  p.add_argument("--repeats", type=int, default=1,
                 help="run ours and gensim alternately this many times; the table gives "
                 "medians (a shared machine's speed drifts by 2x within minutes)")
  p.add_argument("--seed", type=int, default=1)
  p.add_argument("--eval_every_epochs", type=int, default=None,
                 help="passed to ours (default: the app's, 0); the run lines then give the "
                 "evaluations during training as a share of the training time")
  args = p.parse_args()
  tmp = tempfile.mkdtemp(prefix="w2v_bench_")
  path = os.path.join(tmp, "corpus.txt")
  if args.synthetic:
    tokens, distinct, exponent = (float(x) for x in args.synthetic.split(","))
    synthetic.write_zipf_corpus(path, int(tokens), int(distinct), exponent)
    args.corpus = f"synthetic Zipf {args.synthetic}"
  n_tokens = tokenized_copy(args.corpus if not args.synthetic else path, path + ".tok")
  os.replace(path + ".tok", path)
  print(f"corpus: {args.corpus or 'bundled SOTU'}, {n_tokens:,} tokens, {args.epochs} epochs;"
        f" gensim {args.threads} workers; ours: {' '.join(ours_command('CORPUS', 'MODEL', 'DIR', args)[1:])}")
  rows = []
  for model in args.models.split(","):
    ours, theirs, ratios = [], [], []
    for r in range(args.repeats):
      ours.append(run_ours(path, model, args, n_tokens, tmp))
      theirs.append(run_gensim(path, int(model == "skipgram"), args, n_tokens, tmp))
      ratios.append(ours[-1]["words_per_sec"] / theirs[-1]["words_per_sec"])
      t = ours[-1]["timings"]
      print(f"{model} run {r + 1}: ours {ours[-1]['words_per_sec']:,.0f} words/s wall "
            f"({ours[-1]['seconds']:.1f} s; training only {ours[-1]['train_words_per_sec']:,.0f}),"
            f" gensim {theirs[-1]['words_per_sec']:,.0f} ({theirs[-1]['seconds']:.1f} s), "
            f"ratio {ratios[-1]:.2f}; analogy {ours[-1]['analogy']:.3f} vs "
            f"{theirs[-1]['analogy']:.3f}; peak RSS {ours[-1]['peak_rss_mb']:,.0f} MB "
            f"(parameters {ours[-1]['parameter_mb']:,.0f} MB) vs "
            f"{theirs[-1]['peak_rss_mb']:,.0f} MB", flush=True)
      print("  ours: " + ", ".join(f"{k} {t[k]:.1f}" for k in PHASES) +
            f", other {ours[-1]['seconds'] - sum(t[k] for k in PHASES):.1f} s", flush=True)
      if args.eval_every_epochs:
        during = t.get("evaluation_during_training", 0.0)
        print(f"  ours: evaluation during training {during:.2f} s = "
              f"{100 * during / max(t['training'], 1e-9):.1f}% of training", flush=True)
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
  print("| mode | wall | " + " | ".join(PHASES) + " | other | gensim wall | peak RSS MB ours "
        "(parameters) | gensim |")
  print("|---|---|" + "---|" * len(PHASES) + "---|---|---|---|")
  for model, o, g, _ in rows:
    phases = [float(np.median([x["timings"][k] for x in o])) for k in PHASES]
    other = float(np.median([x["seconds"] - sum(x["timings"][k] for k in PHASES) for x in o]))
    print(f"| {model} | {med(o, 'seconds'):.1f} | " + " | ".join(f"{v:.1f}" for v in phases) +
          f" | {other:.1f} | {med(g, 'seconds'):.1f} | {med(o, 'peak_rss_mb'):,.0f} "
          f"({med(o, 'parameter_mb'):,.0f}) | {med(g, 'peak_rss_mb'):,.0f} |")
  shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
