"""Synchronous replicas for twotower: --strategy=mirrored (in a fresh process with 2 logical
CPU devices: the device split must precede TensorFlow's start) and --strategy=multi_worker
(MultiWorkerMirroredStrategy on real processes over loopback, TensorFlow's own pattern)."""
import json
import os
import subprocess
import sys
import uuid

import pytest

from tf_embeddings.data.errors import UserError
from tf_embeddings.training import distribute

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--dataset=synthetic", "--batch_size=256", "--embedding_dim=8", "--tower_layers=16"]

# Two replicas of MirroredStrategy on 2 logical CPUs against one process, on one batch of
# 8 rows with repeated items (accidental hits across the replicas' halves) and logQ: the
# summed replica losses equal the single-process loss on the whole batch, and the summed
# replica gradients (all_gather's gradient included) equal its gradients.
EQUALITY = r"""
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tf_embeddings.data.errors import UserError
from tf_embeddings.twotower import config as config_lib, inputs, model as model_lib
from tf_embeddings.twotower import objective as objective_lib, train as train_lib
from tf_embeddings.training import distribute
config = config_lib.resolve("unused", dataset="synthetic", embedding_dim=8, tower_layers=[16],
                            batch_size=8)
prepared = inputs.prepare(config.data)
counts = train_lib.positives_counts(prepared.train)
batch = {"user": tf.constant([0, 1, 2, 3, 4, 5, 6, 7], tf.int64),
         "item": tf.constant([5, 9, 5, 2, 9, 7, 5, 3], tf.int64),
         "label": tf.ones([8]), "session": tf.zeros([8], tf.int64)}
one = model_lib.build_model(config, prepared.data)
objective = objective_lib.Objective(config.train, one, counts)
assert not objective.per_item  # more items than rows: the plain [B, B] loss (numpy-tested)
with tf.GradientTape() as tape:
  ref_loss = objective(batch, tf.constant(0, tf.int64))
ref_grads = tape.gradient(ref_loss, one.trainable_variables)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
dist = distribute.Distribution("mirrored", strategy)
with strategy.scope():
  two = model_lib.build_model(config, prepared.data)
for a, b in zip(two.trainable_variables, one.trainable_variables):
  a.assign(b)
replicated = objective_lib.Objective(config.train, two, counts, replicas=True)
def replica_fn(part):
  with tf.GradientTape() as tape:
    loss = replicated(part, tf.constant(0, tf.int64))
  grads = tape.gradient(loss, two.trainable_variables)
  ctx = tf.distribute.get_replica_context()
  return loss, ctx.all_reduce("sum", [tf.convert_to_tensor(g) for g in grads])
@tf.function
def step(parts):
  loss, grads = strategy.run(replica_fn, args=(parts,))
  return (strategy.reduce("sum", loss, axis=None),
          [strategy.experimental_local_results(g)[0] for g in grads],
          strategy.experimental_local_results(loss))
parts = strategy.experimental_distribute_values_from_function(
    lambda ctx: {k: v[ctx.replica_id_in_sync_group * 4:][:4] for k, v in batch.items()})
loss, grads, shares = step(parts)
bad = []
for size in (7, 256):
  try:
    train_lib._check_replicated(config_lib.resolve("unused", batch_size=size), dist)
  except UserError as e:
    bad.append(str(e))
refused = []  # what the replicas do not run, refused by train() before the run starts
for settings in ({"loss": "bce"}, {"mixed_negatives": 8}, {"jit_compile": True}):
  try:
    train_lib.train(config_lib.resolve(sys.argv[1], dataset="synthetic", **settings),
                    dist=dist)
  except UserError as e:
    refused.append(str(e))
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "loss": float(loss),
                  "ref_loss": float(ref_loss), "shares": [float(s) for s in shares],
                  "grad_diff": max(float(tf.reduce_max(tf.abs(tf.convert_to_tensor(a) - b)))
                                   for a, b in zip(ref_grads, grads)),
                  "grad_norm": max(float(tf.reduce_max(tf.abs(tf.convert_to_tensor(a))))
                                   for a in ref_grads),
                  "bad_batch": bad, "refused": refused}))
"""


def test_mirrored_two_replicas_equal_one_process(tmp_path):
  """(In a fresh process: the in-process parameter-server test leaves this one's eager
  context pointing at a cluster that is gone, where no strategy can be created.)"""
  run = tmp_path / "run"
  res = subprocess.run([sys.executable, "-c", EQUALITY, str(run)], capture_output=True,
                       text=True,
                       cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
                       timeout=180, check=False)
  assert res.returncode == 0, res.stderr[-3000:]
  got = json.loads(res.stdout.strip().splitlines()[-1])
  assert got["replicas"] == 2
  assert abs(got["loss"] - got["ref_loss"]) < 1e-5, got
  assert abs(got["shares"][0] - got["shares"][1]) > 1e-3, got  # two different halves
  assert got["grad_diff"] < 1e-5 and got["grad_norm"] > 1e-3, got
  assert got["bad_batch"] == [
      "--batch_size=7 does not split over the 2 replicas of --strategy=mirrored: use a "
      "multiple of 2 (it is the global batch)"], got
  assert len(got["refused"]) == 3, got
  assert got["refused"][0].startswith("--strategy=mirrored trains --loss=inbatch_softmax"), got
  assert got["refused"][1].startswith("--strategy=mirrored trains --loss=inbatch_softmax"), got
  assert got["refused"][2].startswith("--jit_compile does not run under --strategy=mirrored"), got
  assert "--loss=bce is not built" in got["refused"][0], got
  assert "--loss=inbatch_softmax with --mixed_negatives is not" in got["refused"][1], got
  assert not os.path.exists(run)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("tf_config, message", [
    ("{'cluster': 1}", "TF_CONFIG is not JSON"),
    (json.dumps({"cluster": {"worker": ["localhost:1"], "ps": ["localhost:2"]},
                 "task": {"type": "worker", "index": 0}}),
     'TF_CONFIG: --strategy=multi_worker takes no "ps" job'),
    (json.dumps({"cluster": {"chief": ["localhost:1"], "evaluator": ["localhost:2"]},
                 "task": {"type": "evaluator", "index": 0}}),
     'TF_CONFIG: --strategy=multi_worker needs a "worker" job'),
])
def test_multi_worker_tf_config_mistakes(monkeypatch, tf_config, message):
  monkeypatch.setenv("TF_CONFIG", tf_config)
  with pytest.raises(UserError, match=message):
    with distribute.distribution("twotower", "tf_embeddings.twotower", "multi_worker",
                                 ("multi_worker",)):
      pass


def test_multi_worker_cluster_that_does_not_answer(monkeypatch):
  mine, peer = distribute.free_ports(2)
  monkeypatch.setenv("TF_CONFIG", json.dumps(
      {"cluster": {"worker": [f"localhost:{mine}", f"localhost:{peer}"]},
       "task": {"type": "worker", "index": 0}}))
  with pytest.raises(UserError, match=(
      rf"the cluster did not answer within 1s \(worker:1 at localhost:{peer}\): run "
      r"`twotower train --strategy=multi_worker` there")):
    with distribute.distribution("twotower", "tf_embeddings.twotower", "multi_worker",
                                 ("multi_worker",), cluster_timeout=1.0):
      pass
  # Our own port answered meanwhile and is free again for TensorFlow's server.
  distribute.rendezvous(f"localhost:{mine}", {}, 1.0)


def test_mirrored_takes_no_local_cluster():
  with pytest.raises(UserError, match="--strategy=mirrored runs no --local_cluster"):
    with distribute.distribution("twotower", "x", "mirrored", ("mirrored",),
                                 local_cluster=(2, 0)):
      pass


def test_cli_mistakes(tmp_path):
  for args, message in [
      (["--strategy=multi_worker", "--local_cluster=workers:0"],
       "--local_cluster=workers:0: needs at least one worker"),
      (["--strategy=multi_worker", "--local_cluster=workers:2,ps:1"],
       "--strategy=multi_worker has no parameter servers: use --local_cluster=workers:N")]:
    res = subprocess.run([sys.executable, "-m", "tf_embeddings.twotower", "train",
                          f"--model_dir={tmp_path}/x", *args], capture_output=True, text=True,
                         cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
                         timeout=120, check=False)
    assert res.returncode == 2 and message in res.stderr, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and not os.path.exists(tmp_path / "x")


# ----------------------------------------------------------------------------- a cluster


def _hit100(stdout):
  line = [l for l in stdout.splitlines() if l.startswith("trained ")][0]
  return float(line.split("hit@100 ")[1].split()[0])


def test_multi_worker_local_cluster_matches_one_process_and_resumes(tmp_path):
  """2 workers, 1 epoch then resumed to 2: the figures are one process's (the global batch
  is split and its candidates gathered), only worker 0 wrote checkpoints (the other's
  scratch directory is gone), and on resume worker 1 took worker 0's restored state."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from absl.testing import flagsaver  # pylint: disable=import-outside-toplevel
  from tf_embeddings.flags import twotower_flags  # pylint: disable=import-outside-toplevel
  from tf_embeddings.twotower import train as train_lib  # pylint: disable=import-outside-toplevel
  scratch = tmp_path / "tmp"
  scratch.mkdir()
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TMPDIR=str(scratch),
             TEST_MARK=uuid.uuid4().hex)
  run = tmp_path / "mw"
  hits = []
  for epochs in (1, 2):
    res = subprocess.run(
        [sys.executable, "-m", "tf_embeddings.twotower", "train", f"--model_dir={run}", *TINY,
         f"--epochs={epochs}", "--strategy=multi_worker", "--local_cluster=workers:2"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "multi_worker: 2 workers, 2 replicas; this is worker:0 (chief)" in res.stderr
    hits.append(_hit100(res.stdout))
  assert "resuming from" in res.stderr
  assert os.listdir(scratch) == []  # worker 1's run directory and the logs are removed
  assert sorted(os.listdir(run / "checkpoints")) == [
      "checkpoint", "ckpt-46.data-00000-of-00001", "ckpt-46.index",
      "ckpt-92.data-00000-of-00001", "ckpt-92.index"]
  if "dataset" not in flags.FLAGS:
    twotower_flags.define_twotower_flags()
  single = []  # one process, the same way: 1 epoch, then resumed to 2
  for epochs in (1, 2):
    with flagsaver.flagsaver():
      flags.FLAGS([sys.argv[0], f"--model_dir={tmp_path / 'one'}", *TINY,
                   f"--epochs={epochs}"])
      config = twotower_flags.config_from_flags(flags.FLAGS)
    _, last = train_lib.train(config)
    single.append(last["seen_excluded"]["hit@100"])
  assert hits[1] > 0.6, hits  # far above an untrained model (0.35 on this data)
  for got, want in zip(hits, single):
    assert abs(got - want) < 2e-3, (hits, single)
