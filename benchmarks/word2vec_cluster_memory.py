"""Peak memory of the chief of a word2vec parameter-server run, beside the tables' bytes.

The chief (coordinator) schedules the blocks, checkpoints and evaluates; the tables live on
the parameter servers. A chief that makes or copies a whole table (initial values made
whole and sliced, evaluation on a copy of the tables) needs the tables' bytes itself, which
defeats sharding them. This runs

    python -m tf_embeddings.word2vec train --strategy=parameter_server
        --local_cluster=workers:1,ps:1 --corpus=<generated> --embedding_dim=D --epochs=1

on a generated Zipfian corpus with a big vocabulary (data/synthetic.py), samples the RSS of
the chief process alone (/proc/PID/status VmRSS, every 50 ms; the servers are its children
and are not counted) and prints its peak beside the bytes of the three tables, and the same
for a one-process run of the same corpus for comparison.

    .venv/bin/python benchmarks/word2vec_cluster_memory.py [--tokens=3e6 --distinct=4e5
        --dim=300] [--python=/path/to/other/checkout/.venv/bin/python]

--python runs another checkout's app (e.g. an older commit in a git worktree with its own
virtualenv) on the same corpus: before / after figures of a change.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# pylint: disable=wrong-import-position
from tf_embeddings.data import synthetic


def rss_mb(pid):
  try:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("VmRSS:"):
          return int(line.split()[1]) / 1024
  except OSError:
    return None
  return None


def run(python, args, cwd):
  """Runs `python -m tf_embeddings.word2vec train ARGS`; returns (exit code, seconds, peak
  RSS MB of that process alone, the command's stderr tail)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  start = time.perf_counter()
  with subprocess.Popen([python, "-m", "tf_embeddings.word2vec", "train", *args], cwd=cwd,
                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                        text=True) as proc:
    peak = [0.0]
    err = []
    reader = threading.Thread(target=lambda: err.extend(iter(proc.stderr.readline, "")))
    reader.start()
    while proc.poll() is None:
      now = rss_mb(proc.pid)
      if now is not None:
        peak[0] = max(peak[0], now)
      time.sleep(0.05)
    reader.join()
  return proc.returncode, time.perf_counter() - start, peak[0], "".join(err)[-2000:]


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
  p.add_argument("--tokens", type=float, default=3e6)
  p.add_argument("--distinct", type=float, default=4e5)
  p.add_argument("--exponent", type=float, default=0.3)
  p.add_argument("--dim", type=int, default=300)
  p.add_argument("--python", default=sys.executable,
                 help="the interpreter whose tf_embeddings runs (default: this one)")
  p.add_argument("--skip_single", action="store_true", help="no one-process run")
  args = p.parse_args()
  tmp = tempfile.mkdtemp(prefix="w2v_cluster_mem_")
  corpus = os.path.join(tmp, "corpus.txt")
  synthetic.write_zipf_corpus(corpus, int(args.tokens), int(args.distinct), args.exponent)
  common = [f"--corpus={corpus}", "--model=cbow", f"--embedding_dim={args.dim}", "--epochs=1",
            "--words=", "--projector_words=100"]
  rows = []
  modes = [("parameter_server, 1 worker + 1 ps (chief only)",
            ["--strategy=parameter_server", "--local_cluster=workers:1,ps:1"])]
  if not args.skip_single:
    modes.append(("one process", []))
  for name, extra in modes:
    model_dir = os.path.join(tmp, name.split(",")[0].replace(" ", "_"))
    code, seconds, peak, err = run(args.python, [*common, f"--model_dir={model_dir}", *extra],
                                   ROOT)
    if code != 0:
      raise SystemExit(f"{name}: exit {code}\n{err}")
    with open(os.path.join(model_dir, "vocab.tsv"), encoding="utf-8") as f:
      words = sum(1 for _ in f)  # the rows of the tables (UNK's included)
    table_mb = words * (2 * args.dim + 1) * 4 / 2**20
    rows.append((name, seconds, peak, table_mb, words))
  print(f"corpus: {int(args.tokens):,} Zipf tokens over {int(args.distinct):,} words "
        f"(exponent {args.exponent}); dim {args.dim}; {args.python}")
  print("| run | wall (s) | peak RSS of the process (MB) | tables (MB, 3 tables) | words |")
  print("|---|---|---|---|---|")
  for name, seconds, peak, table_mb, words in rows:
    print(f"| {name} | {seconds:.1f} | {peak:,.0f} | {table_mb:,.0f} | {words:,} |")


if __name__ == "__main__":
  main()
