"""twotower throughput: one process vs ParameterServerStrategy clusters on this machine.

Same data, model and steps for every row (the synthetic interactions by default); each row
is a fresh process (a process joins one cluster only), the clusters are --local_cluster
child processes on loopback. Figures: steady-state training examples/sec (train steps
only: no tracing, no evaluation, no checkpoint; for a cluster, the time from scheduling a
window of steps to joining it) and the final hit@100 (seen excluded).

  .venv/bin/python benchmarks/twotower_cluster.py [--dataset=synthetic] [--epochs=3]
      [--repeats=1]

Not a test: numbers depend on the machine and its load. On a 2-core machine this shows
the cost of the parameter-server round trips, not scaling.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

SETTINGS = {  # name: (strategy, (workers, ps) or None)
    "1 process": ("default", None),
    "1 worker + 1 ps": ("parameter_server", (1, 1)),
    "2 workers + 1 ps": ("parameter_server", (2, 1)),
    "2 workers + 2 ps": ("parameter_server", (2, 2)),
}


def one(name, args):
  """Trains one setting in this process; prints a JSON line."""
  from tf_embeddings.training import distribute  # pylint: disable=import-outside-toplevel
  from tf_embeddings.twotower import config as config_lib  # pylint: disable=import-outside-toplevel
  from tf_embeddings.twotower import train as train_lib  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory() as tmp:
    config = config_lib.resolve(f"{tmp}/run", dataset=args.dataset, epochs=args.epochs,
                                batch_size=args.batch_size, eval_every_epoch=False,
                                checkpoint_every=1000000, log_every=args.log_every,
                                average_momentum=0.0)
    strategy, cluster = SETTINGS[name]
    stats = {}
    with distribute.distribution("twotower", "tf_embeddings.twotower", strategy,
                                 ("default", "parameter_server"), 0, cluster) as dist:
      _, last = train_lib.train(config, stats=stats, dist=dist)
  print(json.dumps({"setting": name, "examples_per_sec": stats["examples_per_sec"],
                    "steps": stats["steps"],
                    "hit@100": last["seen_excluded"]["hit@100"]}), flush=True)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--dataset", default="synthetic")
  p.add_argument("--epochs", type=int, default=3)
  p.add_argument("--batch_size", type=int, default=256)
  p.add_argument("--log_every", type=int, default=50,
                 help="steps per scheduled window on a cluster (one join each)")
  p.add_argument("--repeats", type=int, default=1)
  p.add_argument("--one", help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.one:
    one(args.one, args)
    return
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  print(f"{args.dataset}, {args.epochs} epochs, batch {args.batch_size}, default model; "
        f"{os.cpu_count()} cores")
  print("| setting | examples/sec | hit@100 |\n|---|---|---|")
  for _ in range(args.repeats):
    for name in SETTINGS:
      res = subprocess.run([sys.executable, __file__, f"--one={name}", *sys.argv[1:]],
                           capture_output=True, text=True, env=env, check=False)
      lines = [l for l in res.stdout.splitlines() if l.startswith("{")]
      if res.returncode or not lines:
        print(f"| {name} | failed: {res.stderr.strip().splitlines()[-1:]} | |")
        continue
      r = json.loads(lines[-1])
      print(f"| {name} | {r['examples_per_sec']:,.0f} | {r['hit@100']:.4f} |", flush=True)


if __name__ == "__main__":
  main()
