"""The run lifecycle of both apps: cached data tied to the corpus bytes, a failed train that
leaves nothing to resume, a recorded config that is never silently rewritten, exports that
never delete what they did not write, and the CLI's `error: ...` / exit 2 contract.

In-process on tiny runs, plus a few real subprocesses for the exit status and the one line.
"""
import dataclasses
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from launcher import Launchers

from tf_embeddings.data.errors import UserError
from tf_embeddings.twotower import config as tt_config
from tf_embeddings.word2vec import app as w2v_app
from tf_embeddings.word2vec import config as w2v_config
from tf_embeddings.word2vec import inputs as w2v_inputs
from tf_embeddings.word2vec import train as w2v_train
from tf_embeddings.word2vec.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
def _words(prefix, n):
  return [prefix + chr(97 + i // 26) + chr(97 + i % 26) for i in range(n)]


WORDS = _words("w", 30)


def _corpus(path, n=4000, seed=0, words=WORDS):
  rng = np.random.default_rng(seed)
  tokens = [words[i] for i in rng.integers(len(words), size=n)]
  path.write_text("\n".join(" ".join(tokens[i:i + 20]) for i in range(0, n, 20)) + "\n")
  return str(path)


def _w2v(tmp_path, corpus, name="run", **kw):
  args = dict(model_dir=str(tmp_path / name), corpus=corpus, min_count=1, model="cbow",
              loss="sampled_softmax", subtract_log_q=True, train_biases=True,
              embedding_dim=8, epochs=1, batch_size=64, steps_per_call=2, num_sampled=4,
              chunk_tokens=1000, eval_examples=16, summary_every_secs=0.0,
              projector_words=5, words=("waa",), analogy_restrict=100)
  args.update(kw)
  return Config(**args)


def _checkpoints(run_dir):
  d = os.path.join(run_dir, "checkpoints")
  return sorted(n for n in os.listdir(d) if n.endswith(".index")) if os.path.isdir(d) else []


# ---------------------------------------------------------------- word2vec, in-process

def test_cached_vocab_and_ids_are_rebuilt_when_the_corpus_bytes_change(tmp_path):
  corpus = _corpus(tmp_path / "c.txt")
  config = _w2v(tmp_path, corpus)
  vocab, ids = w2v_inputs.prepare_data(config)
  mtime = os.path.getmtime(os.path.join(config.model_dir, "ids.int32"))
  again, _ = w2v_inputs.prepare_data(config, require_cached=True)  # same bytes: reused
  assert again.words == vocab.words
  assert os.path.getmtime(os.path.join(config.model_dir, "ids.int32")) == mtime
  # Same path, other text.
  _corpus(tmp_path / "c.txt", n=3000, words=_words("x", 20))
  with pytest.raises(UserError, match="is not the text the run .* was trained on"):
    w2v_inputs.prepare_data(config, require_cached=True)  # a run with checkpoints
  rebuilt, ids = w2v_inputs.prepare_data(config)
  assert set(rebuilt.words[1:]) == set(_words("x", 20))
  assert ids.shape[0] == 3000


def test_a_failed_train_leaves_no_checkpoint_to_resume(tmp_path):
  corpus = _corpus(tmp_path / "c.txt", n=500)
  config = _w2v(tmp_path, corpus, batch_size=4096, steps_per_call=16)
  for _ in range(2):  # the rerun fails the same way instead of "resuming" untrained vectors
    with pytest.raises(UserError, match="fewer examples than one block"):
      w2v_train.train(config)
    assert not _checkpoints(config.model_dir)
    assert not os.path.exists(os.path.join(config.model_dir, "eval.json"))
  # The fix the message gives works in the same directory (nothing was trained).
  fixed = dataclasses.replace(config, batch_size=16, steps_per_call=2)
  w2v_train.train(fixed)
  assert _checkpoints(config.model_dir)


@pytest.fixture(scope="module")
def w2v_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("w2v")
  config = _w2v(root, _corpus(root / "c.txt"))
  w2v_train.train(config)
  return config


def test_config_change_on_a_finished_run_is_refused_naming_the_fields(w2v_run, tmp_path):
  run = str(tmp_path / "copy")
  import shutil  # pylint: disable=import-outside-toplevel
  shutil.copytree(w2v_run.model_dir, run)
  config = dataclasses.replace(w2v_run, model_dir=run)
  path = os.path.join(run, "config.json")
  with open(path, encoding="utf-8") as f:
    before = f.read()
  changed = dataclasses.replace(config, window=3, learning_rate=0.1)
  with pytest.raises(UserError, match=r"incompatible run \(--learning_rate=0.1 vs 0.05 in the "
                     r"run, --window=3 vs 5 in the run\).*--resume=false"):
    w2v_train.train(changed)
  with open(path, encoding="utf-8") as f:
    assert f.read() == before, "a refused train must not rewrite config.json"
  # More epochs and another cadence extend the run; recorded with the step they began at.
  steps = int(_checkpoints(run)[-1].split("-")[1].split(".")[0])
  w2v_train.train(dataclasses.replace(config, epochs=2, summary_every_secs=1.0))
  with open(path, encoding="utf-8") as f:
    recorded = json.load(f)
  assert recorded["epochs"] == 2
  assert recorded["changes"] == [{"step": steps, "changed": {"epochs": [1, 2],
                                                             "summary_every_secs": [0.0, 1.0]}}]
  # --resume=false starts over with the new config.
  w2v_train.train(dataclasses.replace(changed, resume=False))
  with open(path, encoding="utf-8") as f:
    recorded = json.load(f)
  assert recorded["window"] == 3 and "changes" not in recorded


def test_a_run_recorded_with_learning_rate_0_resumes_with_the_same_rate(w2v_run, tmp_path):
  # config.json used to record --learning_rate=0 ("the model's default", then decided by
  # the trainer) beside resolved_learning_rate; config.resolve now records the decided
  # rate. An old run resolves to the rate it trained with, so its flags still resume it.
  run = str(tmp_path / "old")
  import shutil  # pylint: disable=import-outside-toplevel
  shutil.copytree(w2v_run.model_dir, run)
  path = os.path.join(run, "config.json")
  with open(path, encoding="utf-8") as f:
    recorded = json.load(f)
  assert recorded["learning_rate"] == recorded["resolved_learning_rate"] == 0.05  # cbow
  recorded["learning_rate"] = 0.0
  with open(path, "w", encoding="utf-8") as f:
    json.dump(recorded, f)
  config = dataclasses.replace(w2v_run, model_dir=run)
  assert w2v_config.run_dir(run).load_config() == config
  steps = int(_checkpoints(run)[-1].split("-")[1].split(".")[0])
  w2v_train.train(dataclasses.replace(config, epochs=2))  # refused if 0.0 != 0.05
  with open(path, encoding="utf-8") as f:
    recorded = json.load(f)
  assert recorded["learning_rate"] == recorded["resolved_learning_rate"] == 0.05
  assert recorded["changes"] == [{"step": steps, "changed": {"epochs": [1, 2]}}]
  assert int(_checkpoints(run)[-1].split("-")[1].split(".")[0]) > steps


def test_word2vec_exports_refuse_existing_outputs_and_the_run(w2v_run, tmp_path):
  out = tmp_path / "vectors.txt"
  out.write_text("somebody's file")
  with pytest.raises(UserError, match="exists; pass --overwrite to replace it"):
    w2v_app._export(w2v_run, "word2vec", str(out), overwrite=False)  # pylint: disable=protected-access
  assert out.read_text() == "somebody's file"
  w2v_app._export(w2v_run, "word2vec", str(out), overwrite=True)  # pylint: disable=protected-access
  assert out.read_text().startswith("30 8\n")
  proj = tmp_path / "proj"
  for _ in range(2):
    w2v_app._export(w2v_run, "projector", str(proj), overwrite=True)  # pylint: disable=protected-access
  assert sorted(os.listdir(proj)) == ["metadata.tsv", "projector_config.pbtxt", "vectors.tsv"]
  (proj / "notes.txt").write_text("mine")
  with pytest.raises(UserError, match="holds files this export does not write"):
    w2v_app._export(w2v_run, "projector", str(proj), overwrite=True)  # pylint: disable=protected-access
  for output in (w2v_run.model_dir, os.path.join(w2v_run.model_dir, "npy")):
    with pytest.raises(UserError, match="is, contains or is inside the run directory"):
      w2v_app._export(w2v_run, "npy", output, overwrite=True)  # pylint: disable=protected-access
  assert os.path.exists(os.path.join(w2v_run.model_dir, "config.json"))
  assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


# ---------------------------------------------------------------- twotower, in-process

def test_twotower_export_never_deletes_what_it_did_not_write(tmp_path):
  from tf_embeddings.twotower import export as export_lib  # pylint: disable=import-outside-toplevel
  from tf_embeddings.twotower import train as train_lib  # pylint: disable=import-outside-toplevel
  config = tt_config.Config(
      str(tmp_path / "run"), tt_config.DataConfig(dataset="synthetic"),
      tt_config.ModelConfig(embedding_dim=4, tower_layers=()),
      tt_config.TrainConfig(batch_size=512, epochs=1, eval_every_epoch=False))
  train_lib.train(config)
  run_files = sorted(os.listdir(config.model_dir))
  for output in (config.model_dir, str(tmp_path / "run" / "export"), str(tmp_path)):
    with pytest.raises(UserError, match="is, contains or is inside the run directory"):
      export_lib.export(config.model_dir, output, k=3, overwrite=True)
  assert sorted(os.listdir(config.model_dir)) == run_files
  out = str(tmp_path / "exp")
  export_lib.export(config.model_dir, out, k=3)
  with pytest.raises(UserError, match=f"--output={out} exists; pass --overwrite"):
    export_lib.export(config.model_dir, out, k=3)
  export_lib.export(config.model_dir, out, k=3, overwrite=True)
  assert sorted(os.listdir(out)) == ["item_embeddings.npy", "metadata.tsv", "query_model"]
  assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]
  # Another temperature on the finished run is refused: eval would score with it.
  hotter = dataclasses.replace(config, train=dataclasses.replace(config.train, temperature=1.0))
  recorded = config.train.temperature
  with pytest.raises(UserError, match=rf"--temperature=1.0 vs {recorded} in the run"):
    train_lib.train(hotter)
  assert tt_config.read_config(config.model_dir).train.temperature == recorded


# ---------------------------------------------------------------- the CLI contract

# Each case runs `word2vec ARGS` in a child of a launcher that imported the apps and
# TensorFlow once (tests/launcher.py): the console script's entry point in a fresh process,
# its stderr and exit status what `python -m tf_embeddings.word2vec ARGS` gives.
LAUNCHERS = Launchers(ENV)


@pytest.fixture(scope="module", autouse=True)
def _close_launchers():
  yield
  LAUNCHERS.close()


def _one_error_line(res, *needles):
  lines = [l for l in res.stderr.splitlines() if l.startswith("error: ")]
  assert res.returncode == 2, (res.args, res.stderr[-3000:])
  assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
  for needle in needles:
    assert needle in lines[0], (needle, lines[0])


def test_user_mistakes_are_one_error_line_and_exit_2(tmp_path, w2v_run):
  from tf_embeddings.training import rundir as rundir_lib  # pylint: disable=import-outside-toplevel
  (tmp_path / "afile").write_text("x")
  corpus = _corpus(tmp_path / "c.txt")
  with open(corpus, "rb") as f:
    data = gzip.compress(f.read())
  (tmp_path / "bad.gz").write_bytes(data[:40] + bytes(200) + data[240:])
  (tmp_path / "exists.txt").write_text("x")
  busy = tmp_path / "busy"
  busy.mkdir()
  lock = rundir_lib.RunDir(str(busy), dict)
  lock.lock()
  small = ("--min_count=1", "--embedding_dim=4", "--epochs=1")
  cases = {
      "model_dir_file": (("train", "--corpus=c.txt", "--model_dir=afile", *small),
                         ["--model_dir=afile is a file"]),
      # Not writable, even for root.
      "model_dir_unwritable": (("train", "--corpus=c.txt", "--model_dir=/proc/self/run",
                                *small), ["--model_dir=/proc/self/run is not writable"]),
      "busy": (("train", "--corpus=c.txt", "--model_dir=busy", *small),
               [f"run directory busy is in use by process {os.getpid()}"]),
      "corrupt_gzip": (("train", "--corpus=bad.gz", "--model_dir=g", *small),
                       ["bad.gz", "damaged"]),
      "max_vocab_size": (("vocab", "--max_vocab_size=1", "--output=v.tsv"),
                         ["--max_vocab_size"]),
      "enum": (("train", "--sampler=zipf"), ["--sampler=zipf", "value should be one of"]),
      "export_exists": (("export", f"--model_dir={w2v_run.model_dir}",
                         "--output=exists.txt"), ["exists; pass --overwrite"]),
  }
  try:
    results = {name: LAUNCHERS.run("word2vec", args, tmp_path, timeout=300)
               for name, (args, _) in cases.items()}
  finally:
    lock.unlock()
  for name, (_, needles) in cases.items():
    _one_error_line(results[name], *needles)
  assert (tmp_path / "exists.txt").read_text() == "x"
  assert not (tmp_path / "g").exists(), "a failed train leaves no new run directory"
  assert os.listdir(busy) == ["lock"], "the refused trainer must not touch the run"
  # absl's own flag errors (FATAL ..., exit 1) are the app's form, too.
  res = subprocess.run([sys.executable, "-m", "tf_embeddings.twotower", "train", "--model_dir=t",
                        "--epochs=x"], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                       timeout=300, check=False)
  _one_error_line(res, "flag --epochs=x")
