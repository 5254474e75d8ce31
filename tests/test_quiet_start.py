"""No TensorFlow start-up noise on a CPU machine unless --verbosity asks (training/app.py).

The filter is tested in-process on made-up captured text; the apps in real processes whose
environment has no TF_CPP_MIN_LOG_LEVEL (conftest sets one for the other tests), as a user
runs them.
"""
import logging as std_logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tf_embeddings.training import app as app_lib

NOISE = ("absl::InitializeLog", "oneDNN custom operations", "cudart_stub.cc",
         "Could not find cuda drivers", "cpu_feature_guard.cc", "To enable the following",
         "cuInit", "Sharding callback", "XlaSerializedCacheEntry", "cpu_aot_loader")

# What TensorFlow 2.21 writes during its import on a CPU machine (copied from a run), with
# two lines of other origins mixed in.
# pylint: disable=line-too-long
CAPTURED = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1795627525.375011   11436 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results due to floating-point round-off errors from different computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.
I0000 00:00:1795627525.375392   11436 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
I0000 00:00:1795627525.433954   11436 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
ImportError: libfoo.so.1: cannot open shared object file
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1795627527.098850   11436 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results due to floating-point round-off errors from different computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.
E0000 00:00:1795627527.442479   11436 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
W0000 00:00:1795627527.5   11436 some_op.cc:12] a warning nobody listed
"""
# pylint: enable=line-too-long


def test_known_start_up_lines_are_dropped_and_every_other_line_kept():
  assert app_lib.drop_startup_noise(CAPTURED) == (
      "ImportError: libfoo.so.1: cannot open shared object file\n"
      "W0000 00:00:1795627527.5   11436 some_op.cc:12] a warning nobody listed\n")
  assert app_lib.drop_startup_noise("") == ""
  assert app_lib.drop_startup_noise("no newline at the end") == "no newline at the end"


def test_a_failed_cuinit_is_kept_where_a_cuda_driver_was_found():
  # On a GPU machine (no cudart_stub line) a failed cuInit is a real problem.
  text = "".join(line for line in CAPTURED.splitlines(keepends=True)
                 if "cudart_stub" not in line)
  assert "failed call to cuInit" in app_lib.drop_startup_noise(text)


def _record(pathname, msg):
  return std_logging.LogRecord("absl", std_logging.INFO, pathname, 1, msg, (), None)


def test_sharding_callback_lines_of_tensorflow_are_dropped_from_the_log():
  drop = app_lib._DROP_MESSAGES  # pylint: disable=protected-access
  tf_file = os.path.join(os.sep, "site-packages", "tensorflow", "python", "checkpoint",
                         "functional_saver.py")
  assert not drop.filter(_record(tf_file, "Sharding callback duration: %s microseconds"))
  assert drop.filter(_record(tf_file, "Some other message"))
  assert drop.filter(_record(os.path.join(os.sep, "mine", "train.py"),
                             "Sharding callback duration: %s microseconds"))


def _user_env():
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  env["EMBEDDINGS_XLA_CACHE"] = "1"
  return env


def _run(app, args, cwd):
  return subprocess.run([sys.executable, "-m", f"tf_embeddings.{app}", *args], cwd=cwd,
                        env=_user_env(), capture_output=True, text=True, timeout=300,
                        check=False)


def _noise_in(stderr):
  return [pattern for pattern in NOISE if pattern in stderr]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  words = [f"w{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(40)]  # text8: letters
  rng = np.random.default_rng(0)
  tokens = rng.choice(words, size=3000)
  path = tmp_path_factory.mktemp("quiet") / "corpus.txt"
  path.write_text("\n".join(" ".join(tokens[i:i + 20]) for i in range(0, 3000, 20)) + "\n")
  return path


def test_word2vec_train_says_nothing_of_tensorflow_by_default(corpus, tmp_path):
  # Checkpoints every 2 steps (TensorFlow logs a line at each save) and a second train
  # that loads its programs from XLA's cache (whose entries log C++ errors on load).
  args = ["train", f"--corpus={corpus}", "--model=skipgram", "--loss=nce", "--num_sampled=4",
          "--batch_size=64", "--steps_per_call=4", "--chunk_tokens=1000", "--epochs=1",
          "--eval_examples=64", "--summary_every_secs=0", "--projector_words=10",
          "--checkpoint_every_steps=2", "--words=waa"]
  for run in ("a", "b"):
    res = _run("word2vec", args + [f"--model_dir={tmp_path / run}"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert _noise_in(res.stderr) == [], res.stderr
    assert "train: 100.0%" in res.stderr  # the app's own log is still there


def test_twotower_error_is_one_line_without_tensorflow_noise(tmp_path):
  # `eval` imports TensorFlow, then finds no run: the one error line, nothing else.
  res = _run("twotower", ["eval", f"--model_dir={tmp_path}"], tmp_path)
  assert res.returncode == 2, res.stderr
  assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr


def test_verbosity_1_shows_what_tensorflow_says(tmp_path):
  res = _run("twotower", ["eval", f"--model_dir={tmp_path}", "--verbosity=1"], tmp_path)
  assert res.returncode == 2, res.stderr
  # TensorFlow's C++ log lines ("I0000 00:00:1796223444.113301 9366 port.cc:153] ..."); which
  # ones appear depends on the CPU (oneDNN's line is absent on some), so any of them will do.
  assert "absl::InitializeLog" in res.stderr, res.stderr
  assert re.search(r"^[IWE]\d{4} [\d:.]+ +\d+ \w+\.cc:\d+\] ", res.stderr, re.M), res.stderr
  assert res.stderr.rstrip("\n").splitlines()[-1].startswith("error: ")


def test_work_runs_while_tensorflow_is_imported_and_its_outcome_comes_back(monkeypatch):
  import threading  # pylint: disable=import-outside-toplevel
  imported = threading.Event()
  seen = {}

  def fake_import():
    seen["work_started_first"] = started.wait(5)
    imported.set()

  started = threading.Event()
  monkeypatch.setattr(app_lib, "import_tensorflow", fake_import)

  def work(stop):
    started.set()
    seen["overlapped"] = imported.wait(5)  # the import ran meanwhile
    return 42

  assert app_lib.import_tensorflow_while(work) == 42
  assert seen == {"work_started_first": True, "overlapped": True}

  def failing(stop):
    raise ValueError("bad corpus")

  with pytest.raises(ValueError, match="bad corpus"):  # raised after the import
    app_lib.import_tensorflow_while(failing)


def test_an_interrupted_import_stops_the_work_before_raising(monkeypatch):
  import threading  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  running = threading.Event()
  ended = []

  def interrupted():
    running.wait(5)
    raise KeyboardInterrupt

  monkeypatch.setattr(app_lib, "import_tensorflow", interrupted)

  def work(stop):
    running.set()
    while not stop.is_set():
      time.sleep(0.01)
    time.sleep(0.2)  # still cleaning up: the caller must wait for it
    ended.append(True)

  with pytest.raises(KeyboardInterrupt):
    app_lib.import_tensorflow_while(work)
  assert ended == [True]


def test_a_stopped_corpus_pass_leaves_no_ids(tmp_path):
  import threading  # pylint: disable=import-outside-toplevel
  from tf_embeddings.word2vec import inputs  # pylint: disable=import-outside-toplevel
  from tf_embeddings.word2vec.config import Config  # pylint: disable=import-outside-toplevel
  corpus = tmp_path / "c.txt"
  corpus.write_text("the cat sat on the mat\n" * 100)
  stop = threading.Event()
  stop.set()
  config = Config(model_dir=str(tmp_path / "run"), corpus=str(corpus), min_count=1)
  with pytest.raises(inputs.Stopped):
    inputs.prepare_data(config, stop=stop)
  left = sorted(os.listdir(tmp_path / "run"))
  assert not [name for name in left if name.startswith(("ids", ".ids"))], left
