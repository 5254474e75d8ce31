"""Vocabulary and encoding throughput of `word2vec train`'s data preparation, at 3 sizes.

Generates synthetic corpora of Zipfian words (text8-tokenizer-safe lowercase words, 20 words a
line, written on the fly to a temporary file), then, in a fresh process per size, runs
word2vec/inputs.py's prepare_data as `word2vec train` does: the vocabulary pass (data/corpus.py
streaming, data/tokenizer.py, data/vocab.py VocabularyBuilder counting and writing
provisional ids) and the encoding pass (provisional ids mapped to the final ids). Prints
tokens/s of each pass (their timings) and the peak RSS of the process above its RSS after the
imports (and the largest tokenising worker's, data/tokenize_pool.py), per size, and
extrapolates to 1B tokens if the time per token is flat across the sizes (within 25%).

    .venv/bin/python benchmarks/word2vec_data_scaling.py [--sizes=10e6,30e6,100e6]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from tf_embeddings.data import synthetic  # pylint: disable=wrong-import-position

CHILD = r"""
import json, os, resource, sys
from tf_embeddings.word2vec import inputs
from tf_embeddings.word2vec.config import Config
def rss_mb():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
base = rss_mb()  # after the imports (TensorFlow included)
timings = {}
config = Config(model_dir=sys.argv[2], corpus=sys.argv[1])
vocab, ids = inputs.prepare_data(config, timings=timings)
print(json.dumps({"tokens": int(ids.shape[0]), "words": len(vocab),
                  "vocab_s": timings["vocabulary"], "encode_s": timings["encoding"],
                  "base_rss_mb": base, "peak_rss_mb": rss_mb(),
                  "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
  p.add_argument("--sizes", default="10e6,30e6,100e6", help="tokens per corpus")
  p.add_argument("--distinct", type=int, default=2_000_000, help="distinct words drawn from")
  p.add_argument("--zipf", type=float, default=1.0)
  args = p.parse_args()
  sizes = [int(float(s)) for s in args.sizes.split(",")]
  tmp = tempfile.mkdtemp(prefix="w2v_scaling_")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  results = []
  try:
    for n in sizes:
      path = os.path.join(tmp, "corpus.txt")
      start = time.perf_counter()
      synthetic.write_zipf_corpus(path, n, args.distinct, args.zipf)
      gen_s = time.perf_counter() - start
      res = subprocess.run([sys.executable, "-c", CHILD, path, os.path.join(tmp, "run")],
                           env=env, cwd=ROOT, capture_output=True, text=True, check=True)
      r = json.loads(res.stdout.strip().splitlines()[-1])
      r["mb"] = os.path.getsize(path) / 1e6
      results.append(r)
      print(f"{r['tokens']:>13,} tokens ({r['mb']:,.0f} MB, generated in {gen_s:.0f} s), "
            f"{r['words']:,} words: vocabulary {r['tokens'] / r['vocab_s']:,.0f} tokens/s "
            f"({r['vocab_s']:.1f} s), encoding {r['tokens'] / r['encode_s']:,.0f} tokens/s "
            f"({r['encode_s']:.1f} s); peak RSS {r['peak_rss_mb']:,.0f} MB, "
            f"{r['peak_rss_mb'] - r['base_rss_mb']:,.0f} MB above the imports; largest "
            f"tokenising worker {r['worker_rss_mb']:,.0f} MB", flush=True)
      os.remove(path)
      shutil.rmtree(os.path.join(tmp, "run"), ignore_errors=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  per_token = [(r["vocab_s"] + r["encode_s"]) / r["tokens"] for r in results]
  flat = max(per_token) <= 1.25 * min(per_token)
  print("seconds per 1M tokens (vocabulary + encoding): "
        + ", ".join(f"{1e6 * t:.3f}" for t in per_token))
  if flat and len(results) >= 3:
    last = results[-1]
    scale = 1e9 / last["tokens"]
    print(f"linear within 25% at {len(results)} sizes: 1B tokens would take about "
          f"{last['vocab_s'] * scale / 60:.0f} min (vocabulary) + "
          f"{last['encode_s'] * scale / 60:.1f} min (encoding); peak RSS above the imports: "
          f"{', '.join(str(round(r['peak_rss_mb'] - r['base_rss_mb'])) for r in results)} MB")
  else:
    print("not linear within 25% (or fewer than 3 sizes): no extrapolation")


if __name__ == "__main__":
  main()
