"""tf.distribute on real processes over loopback (training/distribute.py, twotower on
ParameterServerStrategy): TensorFlow's own pattern, servers as subprocesses with TF_CONFIG
on ports chosen by the OS. In-process servers are no test of this: they share the Python
interpreter (a generator "works") and deadlock on 2 cores."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest

from launcher import Launchers

from tf_embeddings.data.errors import UserError
from tf_embeddings.flags.cluster_flags import parse_local_cluster
from tf_embeddings.training import distribute

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Weight averaging (--average_momentum, on by default) does not run on clusters yet. One
# member (--ensemble=1): the killed-worker test below trains the default ensemble over
# parameter servers.
SMALL = ["--dataset=synthetic", "--epochs=2", "--batch_size=256", "--embedding_dim=8",
         "--tower_layers=16", "--average_momentum=0", "--ensemble=1"]
# Every kind of table (id, feature, history, bias) and the per-step negatives: with the
# negatives' seed fixed for a window of steps a cluster reached hit@100 0.53 vs 0.67.
WIDE = SMALL + ["--use_history", "--item_bias", "--loss=bce"]


LAUNCHERS = Launchers(dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


@pytest.fixture(scope="module", autouse=True)
def _close_launchers():
  yield
  LAUNCHERS.close()


def app(name, *args, env=None, timeout=600):
  """`python -m tf_embeddings.<name> ARGS` with `env` added, in a child of a launcher that
  imported TensorFlow once (tests/launcher.py; the servers of a local cluster it starts are
  plain processes, marked by `env`)."""
  return LAUNCHERS.run(name, args, ROOT, env, timeout)


def marked_processes(mark):
  """PIDs of live processes whose environment holds TEST_MARK=mark (our children)."""
  pids = []
  for pid in os.listdir("/proc"):
    if not pid.isdigit():
      continue
    try:
      with open(f"/proc/{pid}/environ", "rb") as f:
        if f"TEST_MARK={mark}".encode() in f.read().split(b"\0"):
          with open(f"/proc/{pid}/stat", encoding="utf-8") as s:
            if s.read().split(")")[-1].split()[0] != "Z":
              pids.append(int(pid))
    except OSError:
      pass
  return pids


def wait_gone(mark, seconds=15):
  deadline = time.monotonic() + seconds
  while marked_processes(mark) and time.monotonic() < deadline:
    time.sleep(0.2)
  return marked_processes(mark)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("text, message", [
    ("not json", "TF_CONFIG is not JSON"),
    ('{"task": {"type": "chief"}}', 'TF_CONFIG has no "cluster"'),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker"}}', "host:port"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}',
     "task type 'ps' is not a job"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}',
     "out of range"),
])
def test_malformed_tf_config_is_one_line(text, message):
  with pytest.raises(UserError, match=message):
    distribute.parse_tf_config(text)


def test_local_cluster_flag():
  assert parse_local_cluster("workers:2,ps:1") == (2, 1)
  assert parse_local_cluster("workers:3") == (3, 0)
  for bad in ("workers:0,ps:1", "ps:1", "workers:two", "gpus:2"):
    with pytest.raises(ValueError):
      parse_local_cluster(bad)


def test_free_ports_are_distinct():
  ports = distribute.free_ports(6)
  assert len(set(ports)) == 6


@pytest.mark.parametrize("name, args, env, message", [
    ("twotower", ["train", "--model_dir=x", "--strategy=parameter_server",
                  "--local_cluster=workers:0,ps:1", "--average_momentum=0"], {},
     "--local_cluster=workers:0,ps:1: needs at least one worker"),
    ("word2vec", ["train", "--strategy=multi_worker", "--model_dir=x"], {},
     "word2vec does not support --strategy=multi_worker yet"),
    ("word2vec", ["train", "--strategy=parameter_server", "--model_dir=x",
                  "--sampler=learned_unigram", "--local_cluster=workers:1,ps:1"], {},
     "--sampler=learned_unigram does not run on parameter-server workers"),
    ("twotower", ["train", "--model_dir=x", "--strategy=parameter_server",
                  "--local_cluster=workers:1,ps:1"], {},
     "--average_momentum (weight averaging, on by default) does not run on parameter-server"),
    ("word2vec", ["train", "--model_dir=x", "--strategy=mirrored"], {},
     "word2vec does not support --strategy=mirrored yet"),
    ("twotower", ["train", "--model_dir=x", "--strategy=parameter_server",
                  "--average_momentum=0"],
     {"TF_CONFIG": "{'cluster': 1}"}, "error: TF_CONFIG is not JSON"),
    ("twotower", ["train", "--model_dir=x", "--strategy=parameter_server",
                  "--cluster_timeout=1", "--average_momentum=0"],
     {"TF_CONFIG": json.dumps({"cluster": {"chief": ["localhost:1"],
                                           "worker": ["localhost:%d" % p],
                                           "ps": ["localhost:%d" % q]},
                               "task": {"type": "chief", "index": 0}})
      for p, q in [distribute.free_ports(2)]},
     "error: the cluster did not answer within 1s (ps:0 at localhost:"),
    ("twotower", ["server"], {"TF_CONFIG": json.dumps(
        {"cluster": {"chief": ["localhost:1"]}, "task": {"type": "chief"}})},
     "`server` runs the worker and ps tasks"),
])
def test_cluster_mistakes_end_in_one_line(tmp_path, name, args, env, message):
  res = app(name, *args, env=env, timeout=120)
  assert res.returncode == 2, res.stderr[-2000:]
  assert message in res.stderr, res.stderr[-2000:]
  assert "Traceback" not in res.stderr
  assert not os.path.exists(os.path.join(ROOT, "x"))


# ----------------------------------------------------------------------------- a cluster


class _Split:
  """The fields of a training split that twotower.inputs.worker_dataset reads."""

  def __init__(self, users, items):
    self.users, self.items, self.labels, self.sessions = users, items, None, None

  def __len__(self):
    return len(self.users)


def test_tables_are_sharded_and_read_in_order(tmp_path):
  """2 parameter servers: the id table is split over both, the MLP is not; rows of ids
  spanning the shards come back in the order of the ids. 2 workers: each reads its own
  shard of the training split (twotower.inputs.worker_dataset), or its own share of the
  split's file (worker_dataset_from_file)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from tf_embeddings.twotower import inputs  # pylint: disable=import-outside-toplevel
  from tf_embeddings.twotower import model as model_lib  # pylint: disable=import-outside-toplevel
  values = np.arange(10, dtype=np.int32)[:, None] % 5
  with distribute.distribution("twotower", "twotower", "parameter_server",
                               ("parameter_server",), 0, (2, 2), 60) as dist:
    split = _Split(np.arange(40), np.arange(40) % 3)
    per_worker = dist.coordinator.create_per_worker_dataset(
        lambda: inputs.worker_dataset(split, 5, True, dist.num_workers))
    iterator = iter(per_worker)
    fetch = tf.function(lambda it: next(it)["user"])

    def shares_read(it, share):
      """The share(s) of each batch the workers read, in rounds of 24 scheduled batches
      until both workers' shares were seen (a loaded machine can leave one worker idle
      for a whole round)."""
      seen = set()
      for _ in range(10):
        batches = [r.fetch() for r in [dist.coordinator.schedule(fetch, args=(it,))
                                       for _ in range(24)]]
        seen |= {tuple(sorted(set(share(b).tolist()))) for b in batches}
        if len(seen) > 1:
          break
      return seen

    parities = shares_read(iterator, lambda b: b % 2)
    assert parities == {(0,), (1,)}, parities  # one shard a batch, and both shards read
    # --cluster_input=workers: each worker reads its half of the split's file.
    path = str(tmp_path / inputs.WORKER_SPLIT_FILE)
    inputs.save_worker_split(path, split)
    from_file = iter(dist.coordinator.create_per_worker_dataset(
        lambda: inputs.worker_dataset_from_file(path, 40, 5, True, dist.num_workers)))
    halves = shares_read(from_file, lambda b: b // 20)
    assert halves == {(0,), (1,)}, halves  # one share a batch, and both shares read
    # Histories of the 10 users over 6 items (CSR).
    history = (np.array([0, 2, 2, 5, 6, 6, 8, 9, 9, 11, 12]),
               np.array([1, 4, 0, 2, 5, 3, 1, 2, 5, 0, 4, 3]), 6)
    with dist.scope():
      tower = model_lib.Tower(10, [("f", 5, values)], 4, (8,), seed=3, history=history,
                              table_scope=dist.tables)
    shards = tower.id_table.variables
    assert [s.device.split("/device")[0] for s in shards] == [
        "/job:ps/replica:0/task:0", "/job:ps/replica:0/task:1"]
    assert [s.shape[0] for s in shards] == [5, 5]
    assert len(tower.feature_embeddings[0].variables) == 2
    assert not hasattr(tower.weights[0], "variables")  # dense layers stay whole
    # The per-entity data (feature tokens, histories) are sharded like the tables. (The
    # tower's pooling on a cluster is exercised by the end-to-end test below, in child
    # processes: eager remote calls from this process leave it registered functions that
    # it tries to remove, after the cluster is gone, at loopback ports later tests reuse.)
    for data in (tower.feature_values[0], tower.history, tower.history_len,
                 tower.history_items):
      assert len(data.variables) == 2
    np.testing.assert_array_equal(
        distribute.gather_rows(tower.feature_values[0], tf.constant([7, 2, 9])).numpy(),
        values[[7, 2, 9]])
    full = tf.concat(shards, 0).numpy()
    ids = tf.constant([7, 2, 9, 0, 7])
    np.testing.assert_array_equal(distribute.gather_rows(tower.id_table, ids).numpy(),
                                  full[[7, 2, 9, 0, 7]])
    got = distribute.gather_rows(tower.id_table, tf.constant([[7, 2], [9, 0]])).numpy()
    np.testing.assert_array_equal(got, full[[[7, 2], [9, 0]]])


def test_twotower_parameter_server_end_to_end(tmp_path):
  """2 workers + 2 parameter servers (bce, history and item bias): training finishes, its
  figures are within noise of one process on the same data, the 2-shard checkpoint
  restores in a single-process eval (same figures) and export, and training resumes in one
  process (the optimizer's per-shard state re-split); no server is left behind."""
  from tf_embeddings.twotower import train as train_lib  # pylint: disable=import-outside-toplevel
  from tf_embeddings.flags import twotower_flags  # pylint: disable=import-outside-toplevel
  del twotower_flags
  mark = uuid.uuid4().hex
  run = str(tmp_path / "ps")
  res = app("twotower", "train", f"--model_dir={run}", *WIDE, "--strategy=parameter_server",
            "--local_cluster=workers:2,ps:2", env={"TEST_MARK": mark}, timeout=300)
  assert res.returncode == 0, res.stderr[-3000:]
  assert "parameter_server: 2 workers, 2 parameter servers, tables in 2 shards" in res.stderr
  assert not wait_gone(mark), "server processes outlived the chief"
  cluster = _hit100(res.stdout)
  # The same data in one process (in this process: the library entry).
  config = _config(str(tmp_path / "one"))
  _, last = train_lib.train(config)
  single = last["seen_excluded"]["hit@100"]
  assert abs(cluster - single) < 0.06, (cluster, single)
  assert cluster > 0.6  # far above an untrained model (0.35 on this data)
  res = app("twotower", "eval", f"--model_dir={run}", timeout=120)
  assert res.returncode == 0, res.stderr[-2000:]
  assert f"hit@100 {cluster:.4f}" in res.stdout.splitlines()[0]
  out = str(tmp_path / "export")
  res = app("twotower", "export", f"--model_dir={run}", f"--output={out}", "--top_k=5",
            timeout=120)
  assert res.returncode == 0, res.stderr[-2000:]
  assert sorted(os.listdir(out)) == ["item_embeddings.npy", "metadata.tsv", "query_model"]
  # Adam's state is saved per shard: resumed in one process, it is re-split (whole
  # tables), and training goes on.
  res = app("twotower", "train", f"--model_dir={run}", *WIDE, "--epochs=3", timeout=120)
  assert res.returncode == 0, res.stderr[-2000:]
  assert "re-split from tables in 2 shard(s) into 1" in res.stderr, res.stderr[-2000:]
  assert "epoch 3 (" in res.stderr and _hit100(res.stdout) > 0.6


def _hit100(stdout):
  line = [l for l in stdout.splitlines() if l.startswith("trained ")][0]
  return float(line.split("hit@100 ")[1].split()[0])


def _config(model_dir):
  from absl import flags  # pylint: disable=import-outside-toplevel
  from absl.testing import flagsaver  # pylint: disable=import-outside-toplevel
  from tf_embeddings.flags import twotower_flags  # pylint: disable=import-outside-toplevel
  if "dataset" not in flags.FLAGS:
    twotower_flags.define_twotower_flags()
  with flagsaver.flagsaver():
    flags.FLAGS([sys.argv[0], f"--model_dir={model_dir}", *WIDE])
    return twotower_flags.config_from_flags(flags.FLAGS)


def test_interrupt_and_kill_of_the_chief_leave_no_server(tmp_path):
  """Ctrl-C (SIGINT) ends the chief with its message and stops the servers; a chief killed
  with -9 takes its servers with it (PR_SET_PDEATHSIG). (Both chiefs at once.)"""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  chiefs = {}
  for sig in (signal.SIGINT, signal.SIGKILL):
    mark = uuid.uuid4().hex
    args = [sys.executable, "-m", "tf_embeddings.twotower", "train",
            f"--model_dir={tmp_path}/{sig.name}", "--dataset=synthetic", "--epochs=50",
            "--strategy=parameter_server", "--average_momentum=0",
            "--local_cluster=workers:2,ps:1"]
    chiefs[sig] = (mark, subprocess.Popen(args, env=dict(env, TEST_MARK=mark), cwd=ROOT,
                                          text=True, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE))
  errs = {}
  try:
    for sig, (mark, chief) in chiefs.items():
      deadline = time.monotonic() + 120
      while len(marked_processes(mark)) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)  # the chief and its 3 servers
    time.sleep(3)  # servers up; the chiefs connecting or training
    for sig, (mark, chief) in chiefs.items():
      chief.send_signal(sig)
    for sig, (mark, chief) in chiefs.items():
      errs[sig] = chief.communicate(timeout=60)[1]
  finally:
    for _, chief in chiefs.values():
      if chief.poll() is None:
        chief.kill()
        chief.wait()
  for sig, (mark, chief) in chiefs.items():
    assert not wait_gone(mark), f"servers outlived the chief ({sig.name})"
  assert chiefs[signal.SIGINT][1].returncode == 130, errs[signal.SIGINT][-2000:]
  assert "interrupted" in errs[signal.SIGINT]


_SWALLOWING_CHIEF = """
import sys, time
from tf_embeddings.training import distribute
with distribute.interrupt_watchdog([lambda: print("cleaned up", flush=True)],
                                   grace=float(sys.argv[1])):
  ready = False
  while True:  # a main thread that never comes back from Ctrl-C (as one blocked in C++)
    try:
      if not ready:
        ready = True
        print("ready", flush=True)
      time.sleep(60)
    except KeyboardInterrupt:
      pass
"""


@pytest.mark.parametrize("grace,signals", [(1.0, 1), (600.0, 2)])
def test_watchdog_ends_a_chief_that_does_not_come_back_from_ctrl_c(grace, signals):
  """After the grace, or at a second Ctrl-C: the cleanups run, the message, status 130."""
  with subprocess.Popen([sys.executable, "-c", _SWALLOWING_CHIEF, str(grace)], cwd=ROOT,
                        text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as chief:
    assert chief.stdout.readline() == "ready\n"
    for _ in range(signals):
      chief.send_signal(signal.SIGINT)
      time.sleep(0.3)
    out, err = chief.communicate(timeout=30)
  assert chief.returncode == 130, err
  assert out == "cleaned up\n" and err.startswith("interrupted: resume"), (out, err)


def _ctrl_c_inside_watchdog(cleanup_says, grace, then):
  """Runs a Python that sends itself Ctrl-C inside interrupt_watchdog (its cleanup prints
  `cleanup_says`, after `grace` seconds), then runs the code `then` (indented by two, in
  the `except KeyboardInterrupt:` around the context). Returns the CompletedProcess."""
  code = ("import os, signal, time\n"
          "from tf_embeddings.training import distribute\n"
          "try:\n"
          f"  with distribute.interrupt_watchdog([lambda: print({cleanup_says!r})], "
          f"grace={grace}):\n"
          "    os.kill(os.getpid(), signal.SIGINT)\n"
          "    time.sleep(30)\n"
          "except KeyboardInterrupt:\n" + then)
  return subprocess.run([sys.executable, "-c", code], cwd=ROOT, text=True,
                        capture_output=True, timeout=60, check=False)


def test_watchdog_leaves_the_usual_path_alone():
  """A Ctrl-C the main thread handles takes the usual path; without one, the wakeup fd
  and the thread are gone when the context ends."""
  res = _ctrl_c_inside_watchdog("forced", 30, "  print('usual path', flush=True)\n"
                                               "  os._exit(3)\n")
  assert (res.returncode, res.stdout) == (3, "usual path\n"), res.stderr
  with distribute.interrupt_watchdog([]):
    ours = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(ours)
  assert ours != -1
  assert signal.set_wakeup_fd(-1) == -1
  assert not [t for t in threading.enumerate() if t.name == "interrupt-watchdog"]


def test_watchdog_bounds_the_way_out_of_an_interrupted_context():
  """A Ctrl-C that leaves the context as KeyboardInterrupt keeps the watchdog on (even
  when the thread had not read its byte yet: the context lets it catch up first), so a
  hang further up the interrupted path ends after the grace, cleanups run, status 130."""
  res = _ctrl_c_inside_watchdog("cleaned up", 1, "  print('unwound', flush=True)\n"
                                                 "while True:  # stuck further up, deaf to Ctrl-C\n"
                                                 "  try:\n"
                                                 "    time.sleep(60)\n"
                                                 "  except KeyboardInterrupt:\n"
                                                 "    pass\n")
  assert res.returncode == 130, res.stderr
  assert res.stdout == "unwound\ncleaned up\n" and res.stderr.startswith(
      "interrupted: resume"), (res.stdout, res.stderr)


def test_watchdog_lets_a_keyboard_interrupt_raised_by_code_through():
  """KeyboardInterrupt raised by code (no signal: a test's simulated Ctrl-C) leaves the
  context as any exception does: the thread and the wakeup fd are gone, nothing exits."""
  with pytest.raises(KeyboardInterrupt):
    with distribute.interrupt_watchdog([lambda: pytest.fail("forced exit")], grace=0.1):
      raise KeyboardInterrupt
  time.sleep(0.3)  # longer than the grace: a watchdog left on would have ended pytest
  assert signal.set_wakeup_fd(-1) == -1
  assert not [t for t in threading.enumerate() if t.name == "interrupt-watchdog"]


def _task_of(pid):
  with open(f"/proc/{pid}/environ", "rb") as f:
    for item in f.read().split(b"\0"):
      if item.startswith(b"TF_CONFIG="):
        task = json.loads(item[len(b"TF_CONFIG="):])["task"]
        return f"{task['type']}:{task['index']}"
  return "chief"


def _start_and_kill(args, env, kills):
  """Runs the chief `args`; for each (log text, task) in `kills`, SIGKILLs the server `task`
  once a stderr line holds the text. Returns (returncode, stdout, stderr lines)."""
  with subprocess.Popen(args, env=env, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE) as chief:
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(iter(chief.stderr.readline, "")))
    reader.start()
    for text, task in kills:
      deadline = time.monotonic() + 120
      while not any(text in l for l in lines) and time.monotonic() < deadline:
        time.sleep(0.1)
      victim = [p for p in marked_processes(env["TEST_MARK"]) if _task_of(p) == task]
      assert victim and chief.poll() is None, "".join(lines)[-3000:]
      os.kill(victim[0], signal.SIGKILL)
    out = chief.stdout.read()
    chief.wait(timeout=240)
    reader.join()
  return chief.returncode, out, lines


def test_killed_worker_is_survived_killed_ps_resumes(tmp_path):
  """2 workers + 1 ps. kill -9 of a worker after epoch 1 of 3: the coordinator puts its
  step back and the other worker goes on; kill -9 of the parameter server after epoch 2:
  one line, and the same command resumes from the last checkpoint and finishes. With
  --optimizer=lazy_adam (row-wise updates of the sharded tables and their slots) and
  --cluster_input=workers (each worker reads its share of the run's train_split.bin)."""
  mark = uuid.uuid4().hex
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TEST_MARK=mark)
  args = [sys.executable, "-m", "tf_embeddings.twotower", "train", f"--model_dir={tmp_path}/run",
          "--dataset=synthetic", "--epochs=3", "--checkpoint_every=20", "--average_momentum=0",
          "--optimizer=lazy_adam", "--strategy=parameter_server",
          "--local_cluster=workers:2,ps:1", "--cluster_input=workers"]
  rc, _, lines = _start_and_kill(args, env, [("epoch 1 (", "worker:1"),
                                             ("epoch 2 (", "ps:0")])
  err = "".join(lines)
  failed = [i for i, l in enumerate(lines) if "Worker /job:worker/replica:0/task:1 failed" in l]
  epoch2 = [i for i, l in enumerate(lines) if "epoch 2 (" in l]
  assert failed and epoch2 and failed[0] < epoch2[0], err[-3000:]  # survived mid-run
  assert rc == 2, err[-3000:]
  assert "error: the cluster lost a server (" in err and "Traceback" not in err, err[-3000:]
  assert not wait_gone(mark)
  res = subprocess.run(args, env=env, cwd=ROOT, text=True, capture_output=True, timeout=240,
                       check=False)
  assert res.returncode == 0, res.stderr[-3000:]
  step = int(res.stderr.split("resuming from ")[1].split(" at step ")[1].split()[0])
  assert step >= 40  # at least epoch 1's checkpoints (46 steps an epoch)
  assert "epoch 3 (" in res.stderr and _hit100(res.stdout) > 0.6
  assert os.path.getsize(f"{tmp_path}/run/train_split.bin") % 32 == 0
  assert not wait_gone(mark)


# ----------------------------------------------------------------------------- word2vec


def _topic_corpus(path, n_tokens=20000, seed=0):
  """Lines of 6-12 words of one topic (its word plus a suffix: kingalpha, kingbeta, ...),
  30% fillers: a word's nearest neighbours should be its topic's words."""
  topics = ("king", "queen", "paris", "france", "river", "music", "apple", "engine")
  suffixes = ("alpha", "beta", "gamma", "delta", "omega", "sigma")
  fillers = ("the", "of", "and", "a", "to", "in", "is")
  rng = np.random.default_rng(seed)
  words = []
  while len(words) < n_tokens:
    topic = topics[rng.integers(len(topics))]
    for _ in range(rng.integers(6, 13)):
      words.append(topic + suffixes[rng.integers(len(suffixes))] if rng.random() < 0.7
                   else fillers[rng.integers(len(fillers))])
  with open(path, "w", encoding="utf-8") as f:
    for i in range(0, n_tokens, 20):
      f.write(" ".join(words[i:i + 20]) + "\n")


def _topic_purity(words, vectors, k=5):
  """Mean fraction of the k nearest neighbours (cosine) of each topic word in its topic."""
  unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
  topic = [w[:-5] if w.endswith(("alpha", "gamma", "delta", "omega", "sigma")) else
           w[:-4] if w.endswith("beta") else None for w in words]
  sims = unit @ unit.T
  np.fill_diagonal(sims, -2)
  scores = [np.mean([topic[j] == t for j in np.argsort(-sims[i])[:k]])
            for i, t in enumerate(topic) if t]
  return float(np.mean(scores))


# CBOW + sampled softmax: biases trained too; one compiled program (skip-gram has one per
# reduced window), so the workers start training at once.
W2V_FIELDS = dict(model="cbow", embedding_dim=16, batch_size=64, steps_per_call=4,
                  chunk_tokens=2000, epochs=3, eval_examples=64, words=("kingalpha",))
W2V = [f"--{k}={','.join(v) if isinstance(v, tuple) else v}" for k, v in W2V_FIELDS.items()]


def test_word2vec_parameter_server_end_to_end_restores_in_one_process(tmp_path):
  """2 workers + 2 parameter servers, blocks made by the chief: the tables are split over
  both servers; worker 1 killed with -9 mid-run is survived (the coordinator puts its block
  back, the other worker trains the rest; before run_and_exit the chief then hung in
  TensorFlow's teardown waiting for the dead worker); the run finishes within noise of one
  process on the same text, resumes on 1 server with 3 shards a table, and its checkpoint
  restores into one process (the same held-out loss) and exports; no server is left
  behind."""
  from tf_embeddings.word2vec import config as config_lib  # pylint: disable=import-outside-toplevel
  from tf_embeddings.word2vec import evaluate as evaluate_lib  # pylint: disable=import-outside-toplevel
  from tf_embeddings.word2vec import export as export_lib  # pylint: disable=import-outside-toplevel
  from tf_embeddings.word2vec import inputs  # pylint: disable=import-outside-toplevel
  from tf_embeddings.word2vec import model as model_lib  # pylint: disable=import-outside-toplevel
  from tf_embeddings.word2vec import train as train_lib  # pylint: disable=import-outside-toplevel
  corpus = str(tmp_path / "corpus.txt")
  _topic_corpus(corpus)
  mark = uuid.uuid4().hex
  run = str(tmp_path / "ps")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TEST_MARK=mark)
  # The kill at the first progress line (every 0.25 s: at 1 s it came at 88.6% of a 1 s
  # training on a loaded machine, too late for the worker to be missed).
  rc, out, lines = _start_and_kill(
      [sys.executable, "-m", "tf_embeddings.word2vec", "train", f"--corpus={corpus}",
       f"--model_dir={run}", *W2V, "--summary_every_secs=0.25", "--strategy=parameter_server",
       "--local_cluster=workers:2,ps:2"], env, [("train: ", "worker:1")])
  err = "".join(lines)
  assert rc == 0, err[-3000:]
  assert "Worker /job:worker/replica:0/task:1 failed" in err, err[-3000:]
  for table in ("input_embeddings", "output_embeddings", "output_biases"):
    assert (f"{table} in 2 shards on /job:ps/replica:0/task:0, /job:ps/replica:0/task:1"
            in err), err[-3000:]
  assert not wait_gone(mark), "server processes outlived the chief"
  # The frequent words spread over the shards (count-sorted ids: row = id would put them
  # all on the first); the checkpoint says so.
  assert "table rows: row = id x " in err, err[-3000:]
  _, vocab, latest = model_lib.saved_run(run)
  assert not model_lib.checkpoint_layout(latest, len(vocab)).identity
  cluster = json.loads(out)["heldout_full_softmax_loss"]
  # The same text in one process (the library entry, in this process).
  single = train_lib.train(config_lib.Config(model_dir=str(tmp_path / "one"), corpus=corpus,
                                             **W2V_FIELDS))["heldout_full_softmax_loss"]
  assert abs(cluster - single) < 0.15, (cluster, single)
  # The same run on 1 server with 3 shards a table (nothing left to train): the tables
  # restore into the other layout exactly (word2vec has no optimizer state), same figure.
  again = app("word2vec", "train", f"--corpus={corpus}", f"--model_dir={run}", *W2V,
              "--strategy=parameter_server", "--num_ps_shards=3",
              "--local_cluster=workers:1,ps:1", timeout=300)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "resumed from" in again.stderr
  assert "input_embeddings in 3 shards" in again.stderr, again.stderr[-3000:]
  assert abs(json.loads(again.stdout)["heldout_full_softmax_loss"] - cluster) < 1e-5
  # `word2vec eval` in one process: the sharded tables restore whole, the same figure.
  saved, vocab, model = model_lib.restore(run)
  evaluator = evaluate_lib.Evaluator(saved, vocab,
                                     inputs.saved_heldout_ids(run, saved.eval_fraction))
  one = evaluator.run(model)
  assert abs(one["heldout_full_softmax_loss"] - cluster) < 1e-4
  # The cluster's evaluation read the rows where they are (no copy of the tables on the
  # chief): the same neighbours and analogy figures as the restored tables here.
  figures = json.loads(out)
  assert [w for w, _ in figures["nearest_neighbours"]["kingalpha"]] == \
      [w for w, _ in one["nearest_neighbours"]["kingalpha"]]
  assert figures["analogy_seen"] == one["analogy_seen"]
  out_dir = str(tmp_path / "npy")
  export_lib.export(run, "npy", out_dir, overwrite=False)
  vectors = np.load(os.path.join(out_dir, "vectors.npy"))
  with open(os.path.join(out_dir, "vocab.txt"), encoding="utf-8") as f:
    words = f.read().split()
  assert vectors.shape == (len(vocab) - 1, 16)
  # Exported in id order, as the restored model holds them.
  np.testing.assert_array_equal(vectors, model.input_embeddings.numpy()[1:])
  # Topic words next to their topic (an untrained table: about 0.1).
  assert _topic_purity(words, vectors) > 0.8


def test_word2vec_workers_share_too_small_is_one_line(tmp_path):
  """--cluster_input=workers: a corpus whose share per worker gives no block: one line,
  exit 2, before any training. (A whole run of workers making their own blocks:
  test_word2vec_killed_worker_survived_killed_ps_resumes.)"""
  tiny = str(tmp_path / "tiny.txt")
  _topic_corpus(tiny, n_tokens=600)
  res = app("word2vec", "train", f"--corpus={tiny}", f"--model_dir={tmp_path}/tiny", *W2V,
            "--strategy=parameter_server", "--local_cluster=workers:2,ps:1",
            "--cluster_input=workers", timeout=300)
  assert res.returncode == 2, res.stderr[-3000:]
  assert "error: --cluster_input=workers: a worker's share of the corpus" in res.stderr
  assert "Traceback" not in res.stderr
  assert not os.path.exists(os.path.join(tmp_path, "tiny", "checkpoints"))


def test_word2vec_killed_worker_survived_killed_ps_resumes(tmp_path):
  """2 workers + 1 ps, skip-gram, the workers making their own blocks from their shares of
  ids.int32 with TensorFlow ops (--cluster_input=workers; a compiled program per reduced
  window, picked on the worker by the block's window): kill -9 of worker 1 mid-run is
  survived (the other worker's dataset goes on); kill -9 of the parameter server after a
  checkpoint of the second epoch: one error line, exit 2, no server left; the same command
  resumes from that checkpoint (tables, position and step restored on a fresh cluster),
  finishes and learns the topics; its checkpoint exports in one process."""
  from tf_embeddings.word2vec import export as export_lib  # pylint: disable=import-outside-toplevel
  corpus = str(tmp_path / "corpus.txt")
  _topic_corpus(corpus, n_tokens=40000)
  mark = uuid.uuid4().hex
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TEST_MARK=mark)
  fields = dict(W2V_FIELDS, model="skipgram", window=2, batch_size=32, steps_per_call=8)
  run = str(tmp_path / "run")
  args = [sys.executable, "-m", "tf_embeddings.word2vec", "train", f"--corpus={corpus}",
          f"--model_dir={run}", "--epochs=2", "--checkpoint_every_steps=200",
          *[f"--{k}={','.join(v) if isinstance(v, tuple) else v}"
            for k, v in fields.items() if k != "epochs"],
          "--summary_every_secs=0.25",  # the first progress line, the kill, well before the end
          "--strategy=parameter_server", "--local_cluster=workers:2,ps:1",
          "--cluster_input=workers"]
  rc, _, lines = _start_and_kill(args, env, [("train: ", "worker:1"),
                                             ("(epoch 1, chunk ", "ps:0")])
  err = "".join(lines)
  failed = [i for i, l in enumerate(lines) if "Worker /job:worker/replica:0/task:1 failed" in l]
  epoch1 = [i for i, l in enumerate(lines) if "(epoch 1, chunk " in l]
  assert failed and epoch1 and failed[0] < epoch1[0], err[-3000:]  # survived mid-run
  assert rc == 2, err[-3000:]
  assert "error: the cluster lost a server (" in err and "Traceback" not in err, err[-3000:]
  saved = [int(l.split(" at step ")[1].split()[0]) for l in lines if "saved checkpoint " in l]
  assert saved and not wait_gone(mark)
  res = subprocess.run(args, env=env, cwd=ROOT, text=True, capture_output=True, timeout=240,
                       check=False)
  assert res.returncode == 0, res.stderr[-3000:]
  resumed = int(res.stderr.split("resumed from ")[1].split(", step ")[1].split()[0])
  assert resumed in saved
  assert np.isfinite(json.loads(res.stdout)["heldout_full_sigmoid_loss"])
  assert not wait_gone(mark)
  out_dir = str(tmp_path / "npy")
  export_lib.export(run, "npy", out_dir, overwrite=False)
  with open(os.path.join(out_dir, "vocab.txt"), encoding="utf-8") as f:
    words = f.read().split()
  assert _topic_purity(words, np.load(os.path.join(out_dir, "vectors.npy"))) > 0.8


def test_error_summary_drops_the_graph_header_and_the_python_stack():
  """What the one-line 'the cluster lost a server/worker' errors quote of TensorFlow's."""
  message = ("Graph execution error:\n\nDetected at node step/Gather defined at (most recent "
             "call last):\n  File \"<frozen runpy>\", line 198, in _run_module_as_main\n\n"
             "  File \"/x.py\", line 3, in f\n\nCollective ops is aborted by: Socket closed\n"
             "\t [[{{node step/Gather}}]] [Op:__inference_step_1]")
  assert distribute.error_summary(message) == (
      "Collective ops is aborted by: Socket closed [[{{node step/Gather}}]] "
      "[Op:__inference_step_1]")
  assert distribute.error_summary("plain\n message") == "plain message"
  assert len(distribute.error_summary("x" * 500)) == 200


def test_cluster_lost_names_the_tasks_not_answering():
  error = ValueError("Graph execution error:\n\nDetected at node x defined at:\n  File a\n"
                     "Socket closed")
  msg = str(distribute.cluster_lost("server", error, ["ps:0"]))
  assert msg == ("the cluster lost a server (ps:0 not answering; ValueError: Socket closed): "
                 "restart it and rerun the same command to resume from the last checkpoint")
  assert "not answering" not in str(distribute.cluster_lost("worker", error))


@pytest.mark.parametrize("distribution", ["uniform", "normal"])
def test_stateless_rows_are_the_rows_of_the_whole_draw(distribution):
  # Each shard of a table makes its own rows (row_initial): the same bits as the rows of
  # the whole table's draw, at every start (also not on a 4-value counter step).
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  draw = {"uniform": tf.random.stateless_uniform, "normal": tf.random.stateless_normal}
  for shape in ([37, 6], [9, 1], [5, 7]):
    whole = draw[distribution](shape, [5, 1]).numpy()
    for start in range(shape[0]):
      for count in {1, 2, shape[0] - start} - {0}:
        if start + count <= shape[0]:
          got = distribute.stateless_rows(distribution, shape, [5, 1], start, count)
          assert np.array_equal(got.numpy(), whole[start:start + count]), (shape, start)
  table = np.arange(37 * 6).reshape(37, 6)
  initial = distribute.row_initial([37, 6], lambda start, count: table[start:start + count])
  assert np.array_equal(initial(), table)
  assert np.array_equal(initial(partition_shape=(13, 6), partition_offset=(24, 0)), table[24:])


def test_twotower_tables_keep_their_initial_values():
  # The tables are made row block by row block (row_initial): the same values as the
  # whole draws they replaced, the OOV row drawn apart at the end.
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from tf_embeddings.twotower import model as model_lib  # pylint: disable=import-outside-toplevel
  values = np.zeros([10, 2], np.int32)
  history = (np.array([0, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3]), np.array([0, 4, 2]), 6)
  tower = model_lib.Tower(10, [("f", 5, values)], 4, (8,), seed=3, history=history,
                          bias_column="learned", oov=True)
  want = tf.concat([tf.random.stateless_normal([10, 4], [3, 1]) * 0.1,
                    tf.random.stateless_normal([1, 4], [3, 3]) * 0.1], 0)
  assert np.array_equal(tower.id_table.numpy(), want.numpy())
  assert np.array_equal(tower.feature_embeddings[0].numpy(),
                        (tf.random.stateless_normal([5, 4], [3, 10]) * 0.1).numpy())
  assert np.array_equal(tower.history_table.numpy(),
                        (tf.random.stateless_normal([6, 4], [3, 50]) * 0.1).numpy())
  assert np.array_equal(tower.bias_table.numpy(), np.zeros([10, 1], np.float32))
