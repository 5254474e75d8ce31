"""The `word2vec` command line end to end: train -> eval -> export -> vocab, resume, a killed
run, the flagfiles in flags/, and every user mistake ending in one `error:` line.

Each test runs the app as a user does, `python -m tf_embeddings.word2vec ACTION --flags` in its
own process (see tests/launcher.py for how most of them skip importing TensorFlow), on a tiny generated corpus
with planted structure: 8 topics of 6 words each ("kingalpha" ... "kingsigma") plus 7 filler
words; a sentence stays in one topic, so after training a word's nearest neighbours are mostly
words of its topic. A run takes seconds (most of it importing
TensorFlow); the two training runs are shared between tests through module-scoped fixtures,
and every later command runs in one pool, two at a time.
"""
import concurrent.futures
import glob
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from launcher import Launchers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGFILES = {name: os.path.join(ROOT, "flags", name + ".cfg")
             for name in ("skipgram_nce", "cbow_sampled_softmax", "text8_skipgram",
                          "text8_cbow")}
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
TIMEOUT = 600

TOPICS = ("king", "queen", "paris", "france", "river", "music", "apple", "engine")
SUFFIXES = ("alpha", "beta", "gamma", "delta", "omega", "sigma")
FILLERS = ("the", "of", "and", "a", "to", "in", "is")
# Small and fast; everything else comes from the flagfile under test.
FAST = ("--batch_size=64", "--steps_per_call=4", "--chunk_tokens=1000",
        "--eval_examples=64", "--summary_every_secs=0", "--projector_words=20",
        "--words=kingalpha,parisbeta")
LOSS_KEY = {"nce": "heldout_full_sigmoid_loss", "sampled_softmax": "heldout_full_softmax_loss"}
FIRST_LR = {"skipgram": 0.025, "cbow": 0.05}  # the documented defaults of --learning_rate=0


def make_corpus(n_tokens, seed=0):
  """Topic sentences of 6-12 words, 70% topic words and 30% fillers, 20 words a line."""
  rng = np.random.default_rng(seed)
  words = []
  while len(words) < n_tokens:
    topic = TOPICS[rng.integers(len(TOPICS))]
    for _ in range(rng.integers(6, 13)):
      if rng.random() < 0.7:
        words.append(topic + SUFFIXES[rng.integers(len(SUFFIXES))])
      else:
        words.append(FILLERS[rng.integers(len(FILLERS))])
  words = words[:n_tokens]
  return "\n".join(" ".join(words[i:i + 20]) for i in range(0, n_tokens, 20)) + "\n"


def word2vec(*args, cwd):
  return subprocess.run([sys.executable, "-m", "tf_embeddings.word2vec", *map(str, args)], cwd=cwd, env=ENV,
                        capture_output=True, text=True, timeout=TIMEOUT, check=False)


# Most commands run in a child forked from a launcher that imported the apps and TensorFlow
# once (tests/launcher.py). The training runs of the `runs` fixture, --helpfull (whose text
# names the __main__ module) and the run that is killed are plain `python -m
# tf_embeddings.word2vec` subprocesses.
LAUNCHERS = Launchers(ENV)


def app(*args, cwd):
  """Runs `word2vec ARGS` in a child of a launcher (tests/launcher.py)."""
  return LAUNCHERS.run("word2vec", args, cwd, timeout=TIMEOUT)


@pytest.fixture(scope="module", autouse=True)
def _close_launchers():
  yield
  LAUNCHERS.close()


def run_parallel(jobs):
  """{name: callable returning a CompletedProcess} -> {name: result}, two at a time."""
  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    futures = {name: pool.submit(job) for name, job in jobs.items()}
    return {name: future.result() for name, future in futures.items()}


def show(res):
  return (f"exit {res.returncode}\n--- stdout\n{res.stdout[-3000:]}\n"
          f"--- stderr\n{res.stderr[-6000:]}")


def assert_ok(res):
  assert res.returncode == 0, show(res)
  assert "Traceback" not in res.stderr, show(res)


def error_lines(res):
  return [line for line in res.stderr.splitlines() if line.startswith("error: ")]


def assert_user_error(res, *needles):
  """Exit 2, exactly one `error: ...` line containing every needle, no traceback."""
  assert res.returncode == 2, show(res)
  lines = error_lines(res)
  assert len(lines) == 1, show(res)
  for needle in needles:
    assert needle in lines[0], (needle, lines[0])
  assert "Traceback" not in res.stderr, show(res)


def read_json(path):
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def read_vocab(run_dir):
  """[(word, count)] of a run's vocab.tsv, in id order (UNK first)."""
  with open(os.path.join(run_dir, "vocab.tsv"), encoding="utf-8") as f:
    return [(w, int(c)) for w, c in (line.rstrip("\n").split("\t") for line in f)]


def checkpoint_numbers(run_dir):
  names = glob.glob(os.path.join(run_dir, "checkpoints", "ckpt-*.index"))
  return sorted(int(re.search(r"ckpt-(\d+)\.index$", n).group(1)) for n in names)


def recorded_checkpoint(run_dir):
  """The step of the newest checkpoint the `checkpoint` state file records, or None.

  A kill can land after a save's files are written but before the state file names them
  (seen in CI: ckpt-52.index present, the state file still at ckpt-26); a resume rightly
  starts from the recorded one, so that is the one a test compares with.
  """
  path = os.path.join(run_dir, "checkpoints", "checkpoint")
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    match = re.search(r'^model_checkpoint_path: "(?:.*[/\\\\])?ckpt-(\d+)"', f.read(), re.M)
  return int(match.group(1)) if match else None


def checkpoint_embeddings(run_dir):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  reader = tf.train.load_checkpoint(os.path.join(run_dir, "checkpoints"))
  return reader.get_tensor("input_embeddings/.ATTRIBUTES/VARIABLE_VALUE")


def event_files(run_dir):
  return sorted(glob.glob(os.path.join(run_dir, "train", "events.out.tfevents.*")))


def read_scalars(paths):
  """{tag: [(step, value)] sorted by step} of the train/, eval/ and eval_sampled/ scalars in
  event files."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  scalars = {}
  for path in paths:
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if not value.tag.startswith(("train/", "eval/", "eval_sampled/")):
          continue
        if value.HasField("tensor"):
          number = float(tf.make_ndarray(value.tensor))
        else:
          number = float(value.simple_value)
        scalars.setdefault(value.tag, []).append((event.step, number))
  return {tag: sorted(points) for tag, points in scalars.items()}


def same_topic_fraction(words, vectors):
  """Mean fraction of each topic word's 5 nearest neighbours (cosine) from its own topic."""
  unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
  sims = unit @ unit.T
  np.fill_diagonal(sims, -np.inf)
  topic = [next((t for t in TOPICS if w.startswith(t)), None) for w in words]
  fractions = [np.mean([topic[j] == topic[i] for j in np.argsort(-sims[i])[:5]])
               for i in range(len(words)) if topic[i] is not None]
  return float(np.mean(fractions))


def partial_files(run_dir):
  """Temporary files of atomic writes (data/atomic.py) or of TensorFlow's checkpoint saver."""
  found = []
  for directory, dirs, files in os.walk(run_dir):
    for name in files + dirs:
      if name.endswith(".tmp") or "_temp" in name or ".tempstate" in name:
        found.append(os.path.join(directory, name))
  return found


class Runs:
  """Training runs in one directory, each trained once on first use (cwd = that directory)."""

  def __init__(self, root):
    self.root = str(root)
    with open(os.path.join(self.root, "corpus.txt"), "w", encoding="utf-8") as f:
      f.write(make_corpus(5000))
    self._runs = {}

  def train_args(self, flagfile, model_dir, *extra):
    return (f"--flagfile={FLAGFILES[flagfile]}", "--corpus=corpus.txt",
            f"--model_dir={model_dir}", *FAST, *extra)

  def _train(self, flagfile):
    model_dir = f"runs/{flagfile}"
    res = word2vec("train", *self.train_args(flagfile, model_dir, "--eval_every_epochs=1"),
                   cwd=self.root)
    run_dir = os.path.join(self.root, model_dir)
    path = os.path.join(run_dir, "eval.json")
    figures = read_json(path) if os.path.exists(path) else None
    return res, run_dir, figures

  def get(self, flagfile):
    """(CompletedProcess of the train command, run dir, eval.json as written by that run)."""
    if not self._runs:  # both runs at once, on first use
      self._runs = run_parallel({name: (lambda name=name: self._train(name))
                                 for name in ("skipgram_nce", "cbow_sampled_softmax")})
    return self._runs[flagfile]

  def trained(self, flagfile):
    res, run_dir, figures = self.get(flagfile)
    if res.returncode != 0:
      pytest.fail(f"training {flagfile} failed:\n{show(res)}")
    return run_dir, figures


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  return Runs(tmp_path_factory.mktemp("word2vec_app"))


# ---------------------------------------------------------------- train

@pytest.mark.parametrize("flagfile, model, loss", [
    ("skipgram_nce", "skipgram", "nce"),
    ("cbow_sampled_softmax", "cbow", "sampled_softmax"),
])
def test_train_writes_a_complete_run_directory(runs, flagfile, model, loss):
  res, run_dir, figures = runs.get(flagfile)
  assert_ok(res)
  for name in ("vocab.tsv", "config.json", "eval.json", "checkpoints/checkpoint",
               "train/projector_config.pbtxt", "train/vectors.tsv", "train/metadata.tsv"):
    assert os.path.isfile(os.path.join(run_dir, name)), name
  assert checkpoint_numbers(run_dir), os.listdir(os.path.join(run_dir, "checkpoints"))
  assert event_files(run_dir)
  assert not partial_files(run_dir)

  # config.json: the flagfile's values, overridden by the later command-line flags.
  config_path = os.path.join(run_dir, "config.json")
  assert_flagfile_applied(config_path, flagfile, corpus="corpus.txt", batch_size=64,
                          model_dir=f"runs/{flagfile}", projector_words=20)
  config = read_json(config_path)
  assert (config["model"], config["loss"]) == (model, loss)
  assert config["resolved_learning_rate"] == FIRST_LR[model]

  # vocab.tsv: UNK first, then every word of the corpus (all are seen >= 5 times) by count.
  vocab = read_vocab(run_dir)
  assert vocab[0][0] == "<unk>"
  words = [w for w, _ in vocab[1:]]
  assert sorted(words) == sorted([t + s for t in TOPICS for s in SUFFIXES] + list(FILLERS))
  counts = [c for _, c in vocab[1:]]
  assert counts == sorted(counts, reverse=True)
  assert sum(counts) + vocab[0][1] == 5000

  # stdout is the eval figures as JSON, the same as eval.json.
  assert json.loads(res.stdout) == figures
  key = LOSS_KEY[loss]
  other = LOSS_KEY["sampled_softmax" if loss == "nce" else "nce"]
  assert key in figures and other not in figures, sorted(figures)
  vocab_size = len(vocab)
  assert figures["vocab_size"] == vocab_size
  # Untrained output weights are zero: every logit is 0, so the full sigmoid loss is
  # V * log(2) and the full softmax loss is log(V). One epoch must beat both clearly.
  untrained = vocab_size * math.log(2) if loss == "nce" else math.log(vocab_size)
  assert 0 < figures[key] and math.isfinite(figures[key]), figures
  if loss == "nce":
    assert figures[key] < 0.9 * untrained, (figures[key], untrained)
  assert 0.0 <= figures["analogy_accuracy"] <= 1.0
  assert 0 < figures["heldout_examples"] <= 64

  neighbours = figures["nearest_neighbours"]
  assert set(neighbours) == {"kingalpha", "parisbeta"}
  assert all(len(nn) == 8 and word not in dict(nn) for word, nn in neighbours.items())
  # Planted structure: a topic word's nearest neighbours are mostly words of its topic
  # (chance: 5 of the 54 other words, 0.09).
  assert same_topic_fraction(words, checkpoint_embeddings(run_dir)[1:]) > 0.25

  # TensorBoard scalars.
  scalars = read_scalars(event_files(run_dir))
  for tag in ("train/loss", "train/learning_rate", "train/words_per_sec", f"eval/{key}",
              "eval/analogy_accuracy"):
    assert scalars.get(tag), (tag, sorted(scalars))
  lrs = [v for _, v in scalars["train/learning_rate"]]
  assert lrs == sorted(lrs, reverse=True), "the learning rate must decay"
  assert 0.5 * FIRST_LR[model] < lrs[0] <= FIRST_LR[model]
  assert lrs[-1] < 0.05 * FIRST_LR[model], "the decay ends near the floor"
  assert all(v > 0 and math.isfinite(v) for _, v in scalars["train/words_per_sec"])
  assert all(math.isfinite(v) for _, v in scalars["train/loss"])
  assert scalars[f"eval/{key}"][-1][1] == pytest.approx(figures[key], rel=1e-6)
  # --eval_every_epochs=1: the sampled evaluation after each of 3 epochs, the whole one
  # after the last; this run has fewer held-out examples and questions than the samples,
  # so at the end both score the same ones.
  assert len(scalars[f"eval/{key}"]) == 1
  assert [s for s, _ in scalars[f"eval_sampled/{key}"]] == \
      [s for s, _ in scalars["eval_sampled/analogy_accuracy"]]
  assert len(scalars[f"eval_sampled/{key}"]) == 3
  assert assert_timings(run_dir)["evaluation_during_training"] > 0
  assert scalars[f"eval_sampled/{key}"][-1] == pytest.approx(scalars[f"eval/{key}"][0])
  assert scalars["eval_sampled/analogy_accuracy"][-1] == \
      pytest.approx(scalars["eval/analogy_accuracy"][0])

  # The projector: the --projector_words=20 most frequent words, 100-dimensional.
  train_dir = os.path.join(run_dir, "train")
  with open(os.path.join(train_dir, "projector_config.pbtxt"), encoding="utf-8") as f:
    pbtxt = f.read()
  assert 'tensor_path: "vectors.tsv"' in pbtxt and 'metadata_path: "metadata.tsv"' in pbtxt
  projected = np.loadtxt(os.path.join(train_dir, "vectors.tsv"), delimiter="\t", ndmin=2)
  assert projected.shape == (20, 100)
  with open(os.path.join(train_dir, "metadata.tsv"), encoding="utf-8") as f:
    metadata = f.read().splitlines()
  assert metadata == ["word\tcount"] + [f"{w}\t{c}" for w, c in vocab[1:21]]


def assert_timings(run_dir):
  """timings.json: every phase of the command, in seconds, adding up to at most the total,
  and the evaluations during training (a part of "evaluation")."""
  timings = read_json(os.path.join(run_dir, "timings.json"))
  phases = ("startup", "vocabulary", "encoding", "setup", "compilation", "training",
            "evaluation", "checkpoints", "export")
  assert list(timings) == [*phases, "total", "evaluation_during_training"], timings
  assert timings["evaluation_during_training"] <= timings["evaluation"], timings
  assert all(v >= 0 for v in timings.values()), timings
  for phase in ("startup", "vocabulary", "compilation", "training", "evaluation"):
    assert timings[phase] > 0, (phase, timings)
  assert sum(timings[p] for p in phases) <= timings["total"] + 0.01, timings
  return timings


def test_eval_and_checkpoint_cadence(commands):
  res = commands["cadence"]
  assert_ok(res)
  run_dir = commands["cadence_dir"]
  scalars = read_scalars(event_files(run_dir))
  # --eval_every_epochs=0: evaluated once, after the last of 2 epochs; the figures printed.
  assert len(scalars["eval/analogy_accuracy"]) == 1, scalars["eval/analogy_accuracy"]
  assert scalars["eval/analogy_accuracy"][0][0] == scalars["train/loss"][-1][0]
  assert "heldout_full_sigmoid_loss" in json.loads(res.stdout)
  # --checkpoint_every_secs=100000: only the final checkpoint, none after epoch 1.
  assert len(checkpoint_numbers(run_dir)) == 1
  assert_timings(run_dir)
  # --checkpoint_every_secs=0: one at every chunk boundary (3 kept), not just the final one.
  assert_ok(commands["every_chunk"])
  assert len(checkpoint_numbers(commands["every_chunk_dir"])) == 3


# ---------------------------------------------------------------- eval, export, vocab

EXPORTS = {"word2vec": "vectors.txt", "word2vec_binary": "vectors.bin",
           "projector": "projector_out", "npy": "npy_out" + os.sep}


KILLED_ARGS = (
    # Also shows flags/text8_skipgram.cfg parses and applies (config.json is checked).
    "train", f"--flagfile={FLAGFILES['text8_skipgram']}", "--corpus=big.txt",
    "--model_dir=runs/killed", "--epochs=1", "--embedding_dim=8", "--batch_size=32",
    "--steps_per_call=2", "--chunk_tokens=1000", "--checkpoint_every_steps=20",
    "--eval_examples=16", "--words=kingalpha")


def killed_run(root):
  """Trains with checkpoints every chunk, SIGKILLs at the first one, runs the command again.

  The corpus also holds 5 invalid UTF-8 bytes (a lone 0xff, 0xfe 0xfd, a truncated 2-byte
  sequence, a stray continuation byte), which must be replaced, counted and logged.
  """
  os.makedirs(root)
  good = make_corpus(15000, seed=1).encode("utf-8")
  with open(os.path.join(root, "big.txt"), "wb") as f:
    f.write(good[:1000] + b" \xff " + good[1000:2000] + b" \xfe\xfd caf\xc3 " +
            good[2000:3000] + b" \x80 " + good[3000:])
  run_dir = os.path.join(root, "runs", "killed")
  marker = os.path.join(run_dir, "checkpoints", "checkpoint")
  log_path = os.path.join(root, "killed.log")
  with open(log_path, "w", encoding="utf-8") as log:
    proc = subprocess.Popen([sys.executable, "-m", "tf_embeddings.word2vec", *KILLED_ARGS], cwd=root,
                            env=ENV, stdout=subprocess.DEVNULL, stderr=log)
    try:
      deadline = time.monotonic() + TIMEOUT
      while not os.path.exists(marker) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
      still_running = proc.poll() is None
      proc.send_signal(signal.SIGKILL)
    finally:
      proc.kill()
      proc.wait()
  with open(log_path, encoding="utf-8") as f:
    log_text = f.read()
  return {"still_running": still_running, "log": log_text, "run_dir": run_dir,
          "killed_at": recorded_checkpoint(run_dir),
          "eval_json": os.path.exists(os.path.join(run_dir, "eval.json")),
          "resumed": app(*KILLED_ARGS, cwd=root)}


@pytest.fixture(scope="module")
def commands(runs):
  """Every command after the two training runs, two at a time, longest first: resume, a
  killed run, --resume=false, eval, export, vocab, and the mistakes. {name: result}."""
  run_dir, _ = runs.trained("skipgram_nce")
  runs.trained("cbow_sampled_softmax")
  root = runs.root

  def copy_run(name):
    path = os.path.join(root, "runs", name)
    shutil.copytree(run_dir, path)
    return path

  resumed_dir = copy_run("resumed")
  resumed_before = (checkpoint_numbers(resumed_dir)[-1], event_files(resumed_dir))
  reused_dir = copy_run("reused")
  shutil.rmtree(os.path.join(copy_run("nockpt"), "checkpoints"))
  # The binary export reads a copy of the run moved elsewhere, from another cwd: config.json
  # records the training's relative --model_dir, which must not be where checkpoints are read.
  moved = os.path.join(root, "moved", "sg")
  shutil.copytree(run_dir, moved)
  elsewhere = os.path.join(root, "elsewhere")
  os.makedirs(elsewhere)
  os.remove(os.path.join(run_dir, "eval.json"))  # eval must write it again
  with open(os.path.join(root, "empty.txt"), "w", encoding="utf-8") as f:
    f.write("  ,,, !!! 123 \n\n ... \t\n")
  fast = ("--embedding_dim=8",) + FAST

  def cmd(*args, cwd=root):
    return lambda: app(*args, cwd=cwd)

  def reused():
    """A cbow command in the skip-gram run: refused; then with --resume=false."""
    args = runs.train_args("text8_cbow", "runs/reused")  # also shows text8_cbow.cfg applies
    refused = app("train", *args, cwd=root)
    model = read_json(os.path.join(reused_dir, "config.json"))["model"]
    return refused, model, app("train", *args, "--resume=false", cwd=root)

  jobs = {
      "killed": lambda: killed_run(os.path.join(root, "killed")),
      "reused": reused,
      "resumed": cmd("train", *runs.train_args("skipgram_nce", "runs/resumed", "--epochs=4")),
      "eval": cmd("eval", "--model_dir=runs/skipgram_nce", "--words=queenalpha"),
      "vocab": cmd("vocab", "--corpus=corpus.txt", "--output=vocab_out.tsv"),
      "word2vec_binary": cmd("export", f"--model_dir={moved}", "--format=word2vec_binary",
                             f"--output={os.path.join(root, EXPORTS['word2vec_binary'])}",
                             cwd=elsewhere),
  }
  for fmt, output in EXPORTS.items():
    if fmt not in jobs:
      jobs[fmt] = cmd("export", "--model_dir=runs/skipgram_nce", f"--format={fmt}",
                      f"--output={output}")
  jobs.update({
      # Evaluation only after the last epoch, one checkpoint (time cadence not reached).
      "cadence": cmd("train", *runs.train_args("skipgram_nce", "runs/cadence",
                                               "--epochs=2", "--eval_every_epochs=0",
                                               "--checkpoint_every_secs=100000")),
      # A checkpoint at every chunk boundary (time cadence 0 s).
      "every_chunk": cmd("train", *runs.train_args("skipgram_nce", "runs/every_chunk",
                                                   "--epochs=1", "--checkpoint_every_secs=0")),
      "group_size": cmd("train", "--corpus=corpus.txt", "--model_dir=runs/m7",
                        "--group_size=48", *fast),
      "batch_size": cmd("train", "--corpus=corpus.txt", "--model_dir=runs/m8",
                        "--batch_size=8192"),
      "missing_corpus": cmd("train", "--corpus=missing.txt", "--model_dir=runs/m1", *fast),
      "empty_corpus": cmd("train", "--corpus=empty.txt", "--model_dir=runs/m2", *fast),
      "num_sampled": cmd("train", "--corpus=corpus.txt", "--model_dir=runs/m3",
                         "--num_sampled=1000", *fast),
      "sampler": cmd("train", "--corpus=corpus.txt", "--sampler=zipf", "--model_dir=runs/m4"),
      "model": cmd("train", "--corpus=corpus.txt", "--model=glove", "--model_dir=runs/m5"),
      "loss": cmd("train", "--corpus=corpus.txt", "--loss=hinge", "--model_dir=runs/m6"),
      "export_no_checkpoint": cmd("export", "--model_dir=runs/nockpt", "--output=n.txt"),
      "export_no_run": cmd("export", "--model_dir=runs/none", "--output=none.txt"),
      "export_no_output": cmd("export", "--model_dir=runs/skipgram_nce", "--format=npy"),
      "unknown_action": cmd("fly", "--model_dir=runs/skipgram_nce"),
      "no_action": cmd("--model_dir=runs/skipgram_nce"),
      "helpfull": lambda: word2vec("--helpfull", cwd=root),
  })
  results = run_parallel(jobs)
  results["resumed_before"] = resumed_before
  results["cadence_dir"] = os.path.join(root, "runs", "cadence")
  results["every_chunk_dir"] = os.path.join(root, "runs", "every_chunk")
  return results


def test_eval_prints_json_and_rewrites_eval_json(runs, commands):
  run_dir, trained = runs.trained("skipgram_nce")
  res = commands["eval"]
  assert_ok(res)
  printed = json.loads(res.stdout)
  assert read_json(os.path.join(run_dir, "eval.json")) == printed
  # Same weights, same held-out examples: the figures of the end of training.
  key = LOSS_KEY["nce"]
  assert printed[key] == pytest.approx(trained[key], rel=1e-5)
  assert printed["analogy_accuracy"] == trained["analogy_accuracy"]
  assert printed["heldout_examples"] == trained["heldout_examples"]
  assert list(printed["nearest_neighbours"]) == ["queenalpha"]  # --words of this command


def _expected_rows(run_dir):
  vocab = read_vocab(run_dir)
  return [w for w, _ in vocab[1:]], [c for _, c in vocab[1:]], checkpoint_embeddings(run_dir)[1:]


def _load_word2vec(path, binary):
  try:
    from gensim.models import KeyedVectors  # pylint: disable=import-outside-toplevel
  except ImportError:
    from tf_embeddings.data import embedding_formats  # pylint: disable=import-outside-toplevel
    return embedding_formats.load_word2vec(path, binary=binary)
  kv = KeyedVectors.load_word2vec_format(path, binary=binary)
  return list(kv.index_to_key), kv.vectors


@pytest.mark.parametrize("fmt", list(EXPORTS))
def test_export_writes_loadable_files_in_vocab_order(runs, commands, fmt):
  run_dir, _ = runs.trained("skipgram_nce")
  res = commands[fmt]
  assert_ok(res)
  words, counts, vectors = _expected_rows(run_dir)
  assert vectors.shape == (len(words), 100)
  out = os.path.join(runs.root, EXPORTS[fmt])
  if fmt in ("word2vec", "word2vec_binary"):
    with open(out, "rb") as f:
      assert f.readline() == f"{len(words)} 100\n".encode()
    got_words, got_vectors = _load_word2vec(out, binary=fmt == "word2vec_binary")
    assert got_words == words
    np.testing.assert_array_equal(got_vectors, vectors)  # 9 digits round-trip float32
  elif fmt == "projector":
    assert sorted(os.listdir(out)) == ["metadata.tsv", "projector_config.pbtxt", "vectors.tsv"]
    np.testing.assert_array_equal(
        np.loadtxt(os.path.join(out, "vectors.tsv"), delimiter="\t", dtype=np.float32),
        vectors)
    with open(os.path.join(out, "metadata.tsv"), encoding="utf-8") as f:
      assert f.read().splitlines() == ["word\tcount"] + [
          f"{w}\t{c}" for w, c in zip(words, counts)]
  else:
    assert sorted(os.listdir(out)) == ["vectors.npy", "vocab.txt"]
    array = np.load(os.path.join(out, "vectors.npy"))
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, vectors)
    with open(os.path.join(out, "vocab.txt"), encoding="utf-8") as f:
      assert f.read().splitlines() == words
  assert not partial_files(os.path.dirname(out.rstrip(os.sep)) or ".")


def test_vocab_action_writes_the_runs_vocab(runs, commands):
  run_dir, _ = runs.trained("skipgram_nce")
  assert_ok(commands["vocab"])
  with open(os.path.join(runs.root, "vocab_out.tsv"), "rb") as f:
    written = f.read()
  with open(os.path.join(run_dir, "vocab.tsv"), "rb") as f:
    assert written == f.read()


# ---------------------------------------------------------------- resume

def test_resume_continues_the_step_counter_and_the_schedule(runs, commands):
  resumed_dir = os.path.join(runs.root, "runs", "resumed")  # a copy of the skip-gram run
  first, old_events = commands["resumed_before"]
  old_lr = read_scalars(old_events)["train/learning_rate"]
  res = commands["resumed"]
  assert_ok(res)
  match = re.search(r"resumed from \S+ckpt-(\d+): epoch (\d+), chunk (\d+), step (\d+)",
                    res.stderr)
  assert match, show(res)
  assert int(match.group(1)) == first and int(match.group(4)) == first
  assert read_json(os.path.join(resumed_dir, "config.json"))["epochs"] == 4
  last = checkpoint_numbers(resumed_dir)[-1]
  assert 1.15 * first < last < 1.5 * first, (first, last)  # a 4th epoch: ~1/3 more steps
  new_events = [p for p in event_files(resumed_dir) if p not in old_events]
  assert new_events
  new_lr = read_scalars(new_events)["train/learning_rate"]
  assert min(step for step, _ in new_lr) > max(step for step, _ in old_lr)
  # The schedule now decays over 4 epochs: the 4th starts 3/4 of the way down, not at 0.025.
  values = [v for _, v in new_lr]
  assert values == sorted(values, reverse=True)
  assert 0.2 * 0.025 < values[0] <= 0.25 * 0.025 + 1e-7, values[:3]
  assert values[-1] < 0.02 * 0.025


def test_incompatible_run_is_refused_and_resume_false_starts_over(runs, commands):
  cbow_dir, _ = runs.trained("cbow_sampled_softmax")
  other = os.path.join(runs.root, "runs", "reused")  # a copy of the skip-gram run
  refused, model_after_refusal, res = commands["reused"]
  assert_user_error(refused, "--model_dir=runs/reused", "incompatible", "--model='cbow'",
                    "'skipgram'", "--loss=", "--resume=false")
  assert model_after_refusal == "skipgram", "a refused run must leave the directory as it was"
  # The fix the message gives: --resume=false.
  assert_ok(res)
  assert "starting over" in res.stderr and "resumed from" not in res.stderr
  assert_flagfile_applied(os.path.join(other, "config.json"), "text8_cbow",
                          corpus="corpus.txt", model_dir="runs/reused", batch_size=64)
  # Steps count from 0 again: same checkpoints as the cbow run trained from scratch.
  assert checkpoint_numbers(other)[-1] == checkpoint_numbers(cbow_dir)[-1]
  assert len(event_files(other)) == 1, "the skip-gram run's summaries must be gone"
  figures = read_json(os.path.join(other, "eval.json"))
  assert LOSS_KEY["sampled_softmax"] in figures and LOSS_KEY["nce"] not in figures


def test_killed_run_resumes_from_its_last_checkpoint(commands):
  killed = commands["killed"]
  assert killed["still_running"], "training ended before its first checkpoint:\n" + killed["log"]
  assert killed["killed_at"], "killed before any checkpoint was written"
  killed_at = killed["killed_at"]
  assert not killed["eval_json"], "eval.json written before the end of training"
  run_dir, res = killed["run_dir"], killed["resumed"]
  assert_ok(res)
  match = re.search(r"resumed from \S+: epoch 0, chunk (\d+), step (\d+)", res.stderr)
  assert match, show(res)
  assert int(match.group(1)) > 0 and int(match.group(2)) == killed_at
  assert checkpoint_numbers(run_dir)[-1] > int(match.group(2))
  assert "heldout_full_sigmoid_loss" in read_json(os.path.join(run_dir, "eval.json"))
  assert os.path.exists(os.path.join(run_dir, "train", "vectors.tsv"))
  assert not partial_files(run_dir)
  assert_flagfile_applied(os.path.join(run_dir, "config.json"), "text8_skipgram",
                          corpus="big.txt", model_dir="runs/killed", epochs=1, embedding_dim=8)


def test_invalid_utf8_is_replaced_counted_and_training_succeeds(commands):
  killed = commands["killed"]  # its corpus holds 5 invalid bytes (see killed_run)
  assert not error_lines(killed["resumed"])
  assert not [line for line in killed["log"].splitlines() if line.startswith("error: ")]
  assert "5 invalid UTF-8 bytes were replaced" in killed["log"], killed["log"]
  assert "not valid UTF-8" in killed["log"]
  assert_ok(killed["resumed"])
  # The replaced bytes split no word: the vocabulary is the clean corpus's ("caf" is the only
  # new word, seen once, below --min_count).
  assert sorted(w for w, _ in read_vocab(killed["run_dir"])[1:]) == sorted(
      [t + s for t in TOPICS for s in SUFFIXES] + list(FILLERS))


# ---------------------------------------------------------------- mistakes and help

@pytest.mark.parametrize("name, needles", [
    ("missing_corpus", ["'missing.txt'", "does not exist", "--corpus="]),
    ("empty_corpus", ["empty.txt", "no tokens"]),
    ("num_sampled", ["--num_sampled=1000", "55 words"]),
    ("group_size", ["--group_size=48", "must divide --batch_size=64"]),
    ("batch_size", ["--batch_size=8192", "above 4096", "use at most 4096"]),
    ("export_no_checkpoint", ["--model_dir=runs/nockpt", "no checkpoint"]),
    ("export_no_run", ["--model_dir=runs/none", "no word2vec run", "word2vec train"]),
    ("export_no_output", ["--output"]),
    ("unknown_action", ["expected one action", "'fly'", "train,eval,export,vocab"]),
    ("no_action", ["expected one action", "train,eval,export,vocab"]),
])
def test_user_mistake_ends_in_one_error_line(commands, runs, name, needles):
  assert_user_error(commands[name], *needles)
  assert not os.path.exists(os.path.join(runs.root, "none.txt"))
  assert not os.path.exists(os.path.join(runs.root, "runs", "none")), \
      "a failed export must not create the run directory"
  for failed_train in ("m1", "m2", "m3", "m7", "m8"):  # missing, empty corpus; too many negatives
    assert not os.path.exists(os.path.join(runs.root, "runs", failed_train)), \
        "a failed train must not leave its new run directory behind"


@pytest.mark.parametrize("name, flag, value", [
    ("sampler", "sampler", "zipf"), ("model", "model", "glove"), ("loss", "loss", "hinge")])
def test_unknown_enum_value_names_the_flag(commands, name, flag, value):
  res = commands[name]
  assert res.returncode != 0, show(res)
  assert f"--{flag}={value}" in res.stderr and "value should be one of" in res.stderr, show(res)
  assert "Traceback" not in res.stderr, show(res)


def test_helpfull_documents_every_flag(commands):
  res = commands["helpfull"]
  assert res.returncode in (0, 1), show(res)  # absl exits 1 after printing help
  assert "Traceback" not in res.stderr
  with open(os.path.join(ROOT, "flags", "word2vec_flags.py"), encoding="utf-8") as f:
    defined = re.findall(r"DEFINE_\w+\(\s*\"(\w+)\"", f.read())
  for name in ("num_sampled", "sampler", "subsample", "window", "model_dir", "corpus"):
    assert name in defined
  for name in defined:
    assert re.search(rf"^\s+--(\[no\])?{name}: \S", res.stdout, re.M), name


STANDARD = {"sampler": "unigram", "embedding_dim": 100, "window": 5, "subsample": 1e-3,
            "min_count": 5, "epochs": 3}
SKIPGRAM = dict(STANDARD, model="skipgram", loss="nce", num_sampled=8)
CBOW = dict(STANDARD, model="cbow", loss="sampled_softmax", num_sampled=16)
FLAGFILE_VALUES = {
    "skipgram_nce": dict(SKIPGRAM, corpus=""),
    "cbow_sampled_softmax": dict(CBOW, corpus=""),
    "text8_skipgram": dict(SKIPGRAM, corpus="text8"),
    "text8_cbow": dict(CBOW, corpus="text8"),
}


def read_flagfile(name):
  """(comment line, {flag: value}) of flags/<name>.cfg."""
  with open(FLAGFILES[name], encoding="utf-8") as f:
    lines = f.read().splitlines()
  values = {}
  for line in lines[1:]:
    match = re.fullmatch(r"--(\w+)=(\S*)", line)
    assert match, (name, line)
    assert match.group(1) not in values, (name, line)
    values[match.group(1)] = match.group(2)
  return lines[0], values


def assert_flagfile_applied(config_path, name, **overrides):
  """config.json of a `train --flagfile=flags/<name>.cfg <overrides>` run has both."""
  config = read_json(config_path)
  expected = dict(FLAGFILE_VALUES[name], **overrides)
  assert {k: config[k] for k in expected} == expected, name


def test_flagfiles_hold_the_standard_configurations():
  # Each file is trained with, with a few overrides, and the run's config.json checked: the
  # bundled-corpus ones in test_train_..., text8_skipgram in test_killed_run_..., text8_cbow
  # in test_incompatible_run_... . Here: their text, which a user reads.
  model_dirs = set()
  for name, expected in FLAGFILE_VALUES.items():
    comment, values = read_flagfile(name)
    assert comment.startswith("# ") and f"word2vec train --flagfile=flags/{name}.cfg" in comment
    assert values["model_dir"].startswith("runs/"), name
    model_dirs.add(values["model_dir"])
    typed = {k: type(v)(values[k]) if not isinstance(v, float) else float(values[k])
             for k, v in expected.items()}
    assert typed == expected, name
  assert len(model_dirs) == 4, "one run directory each"
  # The text8 files are the bundled-corpus ones with another corpus and run directory.
  for text8, bundled in (("text8_skipgram", "skipgram_nce"), ("text8_cbow",
                                                              "cbow_sampled_softmax")):
    a, b = read_flagfile(text8)[1], read_flagfile(bundled)[1]
    for key in ("corpus", "model_dir"):
      a.pop(key), b.pop(key)
    assert a == b
