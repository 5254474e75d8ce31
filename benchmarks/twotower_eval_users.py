"""What an evaluation costs at many users: every user of the split against a sample.

Every evaluated user ranks every item, so an evaluation's cost grows with the users of the
split; `--eval_users=N` scores a fixed seeded sample of N of them (the evaluations during
training do so by default, N = 10,000; the last one scores all). This generates a CSV of
`--users` users with `--per_user` interactions each over `--items` items (20 planted
topics, Zipf-like popularity; seeded), trains one epoch on it with

    python -m tf_embeddings.twotower train --dataset=csv --data_path=<generated>
        --user_column=user --item_column=item --epochs=1 --eval_every_epoch=false
        --batch_size=1024 --model_dir=<workdir>/run

and then times, as a user pays them (whole commands, peak RSS of each), `twotower eval`
of that run with `--eval_users=N` and without (every user of the test split), printing
both figures side by side.

    .venv/bin/python benchmarks/twotower_eval_users.py [--users=300000 --items=20000
        --per_user=6 --eval_users=10000] [--workdir=DIR]
"""
import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_csv(path, users, items, per_user, seed=0, topics=20):
  """user,item rows: each user draws per_user items of its topic by popularity."""
  rng = np.random.default_rng(seed)
  user_topic = rng.integers(0, topics, users)
  item_topic = rng.integers(0, topics, items)
  popularity = 1.0 / np.arange(1, items + 1) ** 0.8
  members = [np.flatnonzero(item_topic == t) for t in range(topics)]
  weights = [popularity[m] / popularity[m].sum() for m in members]
  with open(path, "w", encoding="ascii") as f:
    f.write("user,item\n")
    for t in range(topics):
      who = np.flatnonzero(user_topic == t)
      drawn = rng.choice(members[t], (len(who), per_user), p=weights[t])
      f.write("".join(f"u{u},i{i}\n" for u, row in zip(who, drawn) for i in row))


def run(args):
  """(wall seconds, peak RSS MB, stdout) of one app command."""
  start = time.monotonic()
  proc = subprocess.Popen([sys.executable, "-m", "tf_embeddings.twotower", *args],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          cwd=ROOT)
  out = proc.stdout.read()
  _, status, usage = os.wait4(proc.pid, 0)
  wall = time.monotonic() - start
  if os.waitstatus_to_exitcode(status) != 0:
    raise SystemExit(f"error: twotower {' '.join(args)} failed")
  return wall, usage.ru_maxrss / 1024.0, out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--users", type=int, default=300_000)
  parser.add_argument("--items", type=int, default=20_000)
  parser.add_argument("--per_user", type=int, default=6)
  parser.add_argument("--eval_users", type=int, default=10_000)
  parser.add_argument("--workdir", default=None, help="default: a temporary directory")
  a = parser.parse_args()
  workdir = a.workdir or tempfile.mkdtemp(prefix="tt_eval_users_")
  os.makedirs(workdir, exist_ok=True)
  data = os.path.join(workdir, "interactions.csv")
  write_csv(data, a.users, a.items, a.per_user)
  model_dir = os.path.join(workdir, "run")
  wall, rss, _ = run(["train", "--dataset=csv", f"--data_path={data}", "--user_column=user",
                      "--item_column=item", "--epochs=1", "--eval_every_epoch=false",
                      "--batch_size=1024", f"--model_dir={model_dir}", "--noresume"])
  print(f"data: {a.users:,} users x {a.per_user} interactions, {a.items:,} items; "
        f"train (1 epoch + the whole final evaluation): {wall:.1f} s, peak RSS {rss:.0f} MB")
  rows = {}
  for name, extra in (("sample", [f"--eval_users={a.eval_users}"]), ("every user", [])):
    wall, rss, out = run(["eval", f"--model_dir={model_dir}", *extra])
    line = next(l for l in out.splitlines() if l.startswith("test (seen excluded)"))
    rows[name] = wall
    print(f"twotower eval, {name:10s}: {wall:7.1f} s  peak RSS {rss:6.0f} MB  | {line}")
    for l in out.splitlines():
      if l.startswith("test: a sample"):
        print(f"  ({l})")
  print(f"ratio every user / sample (whole commands): {rows['every user'] / rows['sample']:.1f}x")


if __name__ == "__main__":
  main()
