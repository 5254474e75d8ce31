"""training/rundir.py and data/atomic.py: config records, the train lock, fingerprints,
checkpoint directories, and exports that replace an output as a whole or not at all."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tf_embeddings.data import atomic
from tf_embeddings.data.errors import UserError
from tf_embeddings.training import rundir as rundir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ)


@dataclasses.dataclass(frozen=True)
class Inner:
  dim: int = 4
  layers: tuple = (8,)


@dataclasses.dataclass(frozen=True)
class Cfg:
  model_dir: str
  inner: Inner = Inner()
  epochs: int = 3
  log_every: int = 10
  lr: float = 0.1


def _rundir(path):
  return rundir_lib.RunDir(str(path), Cfg, free=("model_dir", "epochs", "log_every"),
                           monotone=("epochs",))


# ---------------------------------------------------------------- config.json

def test_config_round_trip_and_differences_name_the_fields(tmp_path):
  rd = _rundir(tmp_path)
  assert rd.load_config(required=False) is None
  with pytest.raises(UserError, match="holds no run"):
    rd.load_config()
  c = Cfg(str(tmp_path), Inner(dim=6, layers=(3, 2)))
  rd.save_config(c)
  assert rd.load_config() == c
  # Loaded from a moved directory: model_dir is where it is now.
  assert _rundir(tmp_path / ".." / tmp_path.name).load_config().model_dir.endswith(".." +
                                                                                  os.sep +
                                                                                  tmp_path.name)
  other = dataclasses.replace(c, inner=Inner(dim=7, layers=(3, 2)), lr=0.5)
  assert [k for k, _, _ in rd.differences(c, other)] == ["inner.dim", "lr"]
  with pytest.raises(UserError, match=r"incompatible run \(--dim=7 vs 6 in the run, "
                     r"--lr=0.5 vs 0.1 in the run\).*--resume=false"):
    rd.check_compatible(c, other)
  # Free settings may change; epochs only grow.
  assert not rd.differences(c, dataclasses.replace(c, epochs=5, log_every=1))
  assert [k for k, _, _ in rd.differences(c, dataclasses.replace(c, epochs=2))] == ["epochs"]


def test_free_changes_are_recorded_with_their_step(tmp_path):
  rd = _rundir(tmp_path)
  c = Cfg(str(tmp_path))
  rd.save_config(c)
  rd.save_config(dataclasses.replace(c, epochs=5), step=120)
  rd.save_config(dataclasses.replace(c, epochs=5, log_every=2), step=200)
  with open(rd.config_path, encoding="utf-8") as f:
    d = json.load(f)
  assert d["epochs"] == 5 and d["log_every"] == 2
  assert d["changes"] == [{"step": 120, "changed": {"epochs": [3, 5]}},
                          {"step": 200, "changed": {"log_every": [10, 2]}}]
  rd.save_config(c, fresh=True)  # nothing trained: recorded as is
  with open(rd.config_path, encoding="utf-8") as f:
    assert "changes" not in json.load(f)


def test_unreadable_config_is_a_user_error(tmp_path):
  (tmp_path / "config.json").write_text("{not json")
  with pytest.raises(UserError, match="unreadable"):
    _rundir(tmp_path).load_config()


def test_model_dir_that_is_a_file_or_unwritable_is_a_user_error(tmp_path):
  f = tmp_path / "file"
  f.write_text("x")
  with pytest.raises(UserError, match="is a file, not a directory"):
    _rundir(f).create()
  with pytest.raises(UserError, match="is a file, not a directory"):
    _rundir(f / "run").create()
  # A process's /proc directory is not writable even for root (who writes anywhere else).
  with pytest.raises(UserError, match=r"--model_dir=/proc/self/run is not writable"):
    _rundir("/proc/self/run").create()
  if os.geteuid() != 0:
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
      with pytest.raises(UserError, match="not writable"):
        _rundir(locked / "run").create()
    finally:
      locked.chmod(0o700)


# ---------------------------------------------------------------- lock

HOLDER = textwrap.dedent("""
    import sys, time
    from tf_embeddings.training import rundir
    rd = rundir.RunDir(sys.argv[1], dict)
    rd.lock()
    print("locked", flush=True)
    time.sleep(60)
""")


def _hold_lock(path):
  proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], env=ENV,
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "locked"
  return proc


def test_second_trainer_is_refused_naming_the_pid_and_a_stale_lock_is_taken_over(tmp_path):
  proc = _hold_lock(tmp_path)
  try:
    with pytest.raises(UserError, match=f"run directory {tmp_path} is in use by process "
                       f"{proc.pid}"):
      _rundir(tmp_path).lock()
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  # The holder was killed: its PID is still in the file, the kernel dropped its lock.
  assert (tmp_path / "lock").read_text().strip() == str(proc.pid)
  rd = _rundir(tmp_path)
  with rd.locked():
    assert (tmp_path / "lock").read_text().strip() == str(os.getpid())
    with pytest.raises(UserError, match=f"in use by process {os.getpid()}"):
      _rundir(tmp_path).lock()  # a second open file description conflicts, too
  with _rundir(tmp_path).locked():  # released
    pass


# ---------------------------------------------------------------- checkpoints, fingerprints

def test_remove_partial_checkpoints_keeps_complete_ones(tmp_path):
  ckpt_dir = tmp_path / "checkpoints"
  (ckpt_dir / "ckpt-7_temp").mkdir(parents=True)
  (ckpt_dir / "ckpt-7_temp" / "part-00000-of-00001.data-00000-of-00001.tempstate1").write_text("x")
  for name in ("checkpoint", "ckpt-5.index", "ckpt-5.data-00000-of-00001"):
    (ckpt_dir / name).write_text("x")
  rundir_lib.remove_partial_checkpoints(str(ckpt_dir))
  assert sorted(os.listdir(ckpt_dir)) == ["checkpoint", "ckpt-5.data-00000-of-00001",
                                          "ckpt-5.index"]
  rundir_lib.remove_partial_checkpoints(str(tmp_path / "missing"))  # no directory: no error


def test_checkpoint_dir_is_checkpoints_and_old_runs_keep_ckpt(tmp_path):
  rd = _rundir(tmp_path)
  assert rd.checkpoint_dir == str(tmp_path / "checkpoints")
  (tmp_path / "ckpt").mkdir()
  assert rd.checkpoint_dir == str(tmp_path / "ckpt")
  (tmp_path / "checkpoints").mkdir()
  assert rd.checkpoint_dir == str(tmp_path / "checkpoints")


def test_fingerprint_changes_with_the_bytes_only_if_they_change(tmp_path):
  f = tmp_path / "corpus.txt"
  f.write_text("a b c\n")
  first = rundir_lib.fingerprint([str(f)])
  assert rundir_lib.fingerprint([str(f)]) == first
  st = os.stat(f)
  f.write_text("a b d\n")  # same size
  os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime
  assert rundir_lib.fingerprint([str(f)])[0]["sha256"] != first[0]["sha256"]


# ---------------------------------------------------------------- outputs

def _write_dir(names, text):
  def build(path):
    for name in names:
      with open(os.path.join(path, name), "w", encoding="utf-8") as f:
        f.write(text)
  return build


def _hidden(directory):
  return sorted(n for n in os.listdir(directory) if n.startswith("."))


def test_existing_output_is_refused_without_overwrite(tmp_path):
  out = tmp_path / "v.txt"
  out.write_text("mine")
  with pytest.raises(UserError, match=f"--output={out} exists; pass --overwrite to replace "
                     "it"):
    atomic.replace_output(str(out), lambda p: open(p, "w").close(), directory=False)
  assert out.read_text() == "mine"
  atomic.replace_output(str(out), lambda p: open(p, "w").write("new"), directory=False,
                        overwrite=True)
  assert out.read_text() == "new"
  assert not _hidden(tmp_path)


def test_directory_output_is_replaced_as_a_whole(tmp_path):
  out = tmp_path / "proj"
  atomic.replace_output(str(out), _write_dir(["a", "b"], "old"), directory=True)
  atomic.replace_output(str(out) + os.sep, _write_dir(["a"], "new"), directory=True,
                        overwrite=True, owned_names=("a", "b"))
  assert sorted(os.listdir(out)) == ["a"] and (out / "a").read_text() == "new"
  assert not _hidden(tmp_path)
  # A failing build leaves the old output and no temporary.
  def fails(path):
    _write_dir(["a"], "half")(path)
    raise RuntimeError("disk full")
  with pytest.raises(RuntimeError):
    atomic.replace_output(str(out), fails, directory=True, overwrite=True)
  assert (out / "a").read_text() == "new" and not _hidden(tmp_path)


def test_outputs_that_are_not_ours_or_hold_the_run_are_refused(tmp_path):
  mine = tmp_path / "home"
  mine.mkdir()
  (mine / "thesis.tex").write_text("years of work")
  with pytest.raises(UserError, match="holds files this export does not write.*thesis.tex"):
    atomic.replace_output(str(mine), _write_dir(["a"], "x"), directory=True, overwrite=True,
                          owned_names=("a",))
  with pytest.raises(UserError, match="is a directory, and this export writes a file"):
    atomic.replace_output(str(mine), _write_dir([], ""), directory=False, overwrite=True)
  run = tmp_path / "runs" / "sg"
  run.mkdir(parents=True)
  for output in (run, run / "export", tmp_path / "runs"):
    with pytest.raises(UserError, match="is, contains or is inside the run directory"):
      atomic.replace_output(str(output), _write_dir(["a"], "x"), directory=True,
                            overwrite=True, model_dir=str(run))
  assert (mine / "thesis.tex").read_text() == "years of work"
  assert sorted(os.listdir(run)) == []


KILLED_EXPORT = textwrap.dedent("""
    import os, sys, time
    from tf_embeddings.data import atomic
    out, directory, tag = sys.argv[1], sys.argv[2] == "dir", sys.argv[3]
    def build(path):
      print("building", flush=True)
      if not directory:
        with open(path, "w") as f:
          for i in range(40):
            f.write(tag * 1000 + "\\n"); f.flush(); time.sleep(0.005)
        return
      for name in ("vectors.tsv", "metadata.tsv", "projector_config.pbtxt"):
        with open(os.path.join(path, name), "w") as f:
          f.write(tag)
        time.sleep(0.07)
    print("start", flush=True)
    atomic.replace_output(out, build, directory, overwrite=True)
    print("done", flush=True)
""")


@pytest.mark.parametrize("directory", [True, False])
def test_kill_9_during_an_export_leaves_the_old_or_the_new_output(tmp_path, directory):
  out = str(tmp_path / ("proj" if directory else "vectors.txt"))
  kind = "dir" if directory else "file"

  def export(tag, kill_after=None):
    proc = subprocess.Popen([sys.executable, "-c", KILLED_EXPORT, out, kind, tag], env=ENV,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "start"
    # The temporary exists once the build starts: the kills land during the build.
    assert proc.stdout.readline().strip() == "building"
    if kill_after is not None:
      time.sleep(kill_after)
      proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.returncode

  def content():
    if not directory:
      with open(out, encoding="utf-8") as f:
        return set(f.read().split())
    assert sorted(os.listdir(out)) == ["metadata.tsv", "projector_config.pbtxt",
                                       "vectors.tsv"]
    return {open(os.path.join(out, n), encoding="utf-8").read() for n in os.listdir(out)}

  assert export("o") == 0
  old = content()
  new = {"n" * 1000} if not directory else {"n"}
  landed = 0
  for kill_after in (0.0, 0.05, 0.1, 0.15, 0.25):
    export("n", kill_after)
    now = content()
    assert now in (old, new), now
    if now == old:
      landed += 1
      assert _hidden(tmp_path), "the killed export's temporary is not beside the output"
  assert landed, "no kill landed during the export: the test did not test anything"
  assert export("z") == 0  # a later successful export removes the dead ones' temporaries
  assert not _hidden(tmp_path), _hidden(tmp_path)


def test_a_run_recorded_before_a_new_field_keeps_its_legacy_value(tmp_path):
  # word2vec runs recorded before --row_update trained with the plain sum: loading their
  # config.json must give "sum", not the new default "bounded".
  from tf_embeddings.word2vec import config as w2v_config
  d = rundir_lib.config_to_dict(w2v_config.Config(model_dir=str(tmp_path)))
  assert d.pop("row_update") == "bounded"
  old = rundir_lib.config_from_dict(w2v_config.Config, d)
  assert old.row_update == "sum"
  assert rundir_lib.config_from_dict(w2v_config.Config, dict(d, row_update="bounded")) \
      .row_update == "bounded"


# ---------------------------------------------------------------- TensorBoard, eval.json


def _events(directory):
  """{tag: [summary value]} of the event files in `directory`."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  files = [os.path.join(directory, n) for n in os.listdir(directory) if "tfevents" in n]
  assert files, f"no event file in {directory}"
  out = {}
  for path in files:
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        out.setdefault(value.tag, []).append(value)
  return out


def test_writers_and_hparams_land_in_train_and_eval(tmp_path):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=import-outside-toplevel
  rd = _rundir(tmp_path / "run")
  rd.create()
  config = Cfg(model_dir=rd.path, inner=Inner(dim=6, layers=(16, 8)), lr=0.05)
  train = rd.summary_writer(rundir_lib.TRAIN_LOGS)
  rd.write_hparams(train, config, extra={"resolved_learning_rate": 0.025},
                   metrics={"hit@10": 0.25})
  train.flush()
  evaluation = rd.summary_writer(rundir_lib.EVAL_LOGS)
  with evaluation.as_default(step=7):
    tf.summary.scalar("eval/mrr", 0.5)
  evaluation.flush()

  logged = _events(tmp_path / "run" / "train")
  (start,) = logged["_hparams_/session_start_info"]
  assert start.metadata.plugin_data.plugin_name == "hparams"
  info = plugin_data_pb2.HParamsPluginData.FromString(
      start.metadata.plugin_data.content).session_start_info
  values = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
            for k, v in info.hparams.items()}
  # config.json's values, flattened; where the run is (model_dir) is not a setting.
  assert values == {"inner.dim": 6, "inner.layers": "[16, 8]", "epochs": 3, "log_every": 10,
                    "lr": 0.05, "resolved_learning_rate": 0.025}
  (text,) = logged["hparams"]
  assert "    inner.dim = 6\n" in tf.make_ndarray(text.tensor).item().decode()
  (metric,) = logged["hparams_metric/hit@10"]
  assert tf.make_ndarray(metric.tensor) == pytest.approx(0.25)
  (mrr,) = _events(tmp_path / "run" / "eval")["eval/mrr"]
  assert tf.make_ndarray(mrr.tensor) == pytest.approx(0.5)


def test_eval_json_is_replaced_whole_or_not_at_all(tmp_path):
  rd = _rundir(tmp_path)
  rd.save_eval({"hit@10": 0.5, "split": "test"})
  path = tmp_path / rundir_lib.EVAL_FILE
  assert path.read_text() == '{\n  "hit@10": 0.5,\n  "split": "test"\n}\n'
  rd.save_eval({"mrr": 0.25})  # an evaluation replaces the last one's figures
  assert json.loads(path.read_text()) == {"mrr": 0.25}
  with pytest.raises(TypeError):
    rd.save_eval({"a": 1.0, "b": object()})  # fails half-way through json.dump
  assert json.loads(path.read_text()) == {"mrr": 0.25}
  assert os.listdir(tmp_path) == [rundir_lib.EVAL_FILE]


def test_projector_files_are_found_from_the_parent_of_many_runs(tmp_path):
  # TensorBoard's own Projector plugin, given --logdir=runs (two runs under it).
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  import werkzeug.test  # pylint: disable=import-outside-toplevel
  from tensorboard.backend.event_processing import data_provider  # pylint: disable=import-outside-toplevel
  from tensorboard.backend.event_processing import plugin_event_multiplexer  # pylint: disable=import-outside-toplevel
  from tensorboard.plugins import base_plugin  # pylint: disable=import-outside-toplevel
  from tensorboard.plugins.projector import projector_plugin  # pylint: disable=import-outside-toplevel
  runs = tmp_path / "runs"
  shapes = {"w2v": (3, 2), "tt": (4, 5)}
  for name, (rows, dim) in shapes.items():
    rd = _rundir(runs / name)
    rd.create()
    writer = rd.summary_writer()
    with writer.as_default(step=1):
      tf.summary.scalar("train/loss", 1.0)
    writer.flush()
    labels = [f"{name}{i}" for i in range(rows)]
    vectors = np.arange(rows * dim, dtype=np.float32).reshape(rows, dim)
    if name == "w2v":
      rd.write_projector(labels, vectors, counts=list(range(rows, 0, -1)))
    else:
      rd.write_projector(labels, vectors, tensor_name="item_embeddings",
                         columns={"item_id": labels, "title": labels})
  multiplexer = plugin_event_multiplexer.EventMultiplexer()
  multiplexer.AddRunsFromDirectory(str(runs))
  multiplexer.Reload()
  context = base_plugin.TBContext(
      logdir=str(runs),
      data_provider=data_provider.MultiplexerDataProvider(multiplexer, str(runs)))
  apps = projector_plugin.ProjectorPlugin(context).get_plugin_apps()
  client = werkzeug.test.Client(apps[projector_plugin.RUNS_ROUTE])
  assert sorted(json.loads(client.get("/").get_data())) == ["tt/train", "w2v/train"]
  for name, shape in shapes.items():
    client = werkzeug.test.Client(apps[projector_plugin.CONFIG_ROUTE])
    config = json.loads(client.get(f"/?run={name}/train").get_data())
    (embedding,) = config["embeddings"]
    assert [int(n) for n in embedding["tensorShape"]] == list(shape)
    assert embedding["metadataPath"].endswith("metadata.tsv")


RUN_AND_EXIT = textwrap.dedent("""
    import atexit, sys
    import tensorflow as tf
    from tf_embeddings.training import app, rundir
    atexit.register(lambda: print("atexit ran", flush=True))
    def command():
      rd = rundir.RunDir(sys.argv[1], dict)
      writer = rd.summary_writer(rundir.TRAIN_LOGS)
      with writer.as_default(step=7):
        tf.summary.scalar("train/loss", 1.5)  # never flushed by the command itself
      print("done", end="")  # buffered: flushed by run_and_exit
      sys.exit(3)
    app.run_and_exit(command)
    print("not reached")
""")


def test_run_and_exit_keeps_the_status_the_events_and_the_atexit_handlers(tmp_path):
  """training.app.run_and_exit (both apps' entry points end the process with os._exit):
  the command's exit status, its unflushed summaries on disk, atexit handlers run,
  buffered stdout written, nothing after it runs."""
  res = subprocess.run([sys.executable, "-c", RUN_AND_EXIT, str(tmp_path / "run")],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), check=False)
  assert res.returncode == 3, res.stderr[-2000:]
  assert res.stdout.startswith("done") and "atexit ran" in res.stdout
  assert "not reached" not in res.stdout
  values = _events(tmp_path / "run" / rundir_lib.TRAIN_LOGS)["train/loss"]
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  assert [float(tf.make_ndarray(v.tensor)) for v in values] == [1.5]
