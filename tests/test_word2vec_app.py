"""The `word2vec` command line end to end: train -> eval -> export -> vocab, resume, a killed
run, the flagfiles in flags/, and every user mistake ending in one `error:` line.

Each test runs the app as a user does (`python -m word2vec ACTION --flags` in a subprocess) on a
tiny generated corpus with planted structure: 8 topics of 6 words each ("kingalpha" ...
"kingsigma") plus 7 filler words; a sentence stays in one topic, so a word's nearest neighbours
are the other words of its topic. A run takes seconds; runs are shared between tests through
module-scoped fixtures, and independent commands run two at a time.
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGFILES = {name: os.path.join(ROOT, "flags", name + ".cfg")
             for name in ("skipgram_nce", "cbow_sampled_softmax", "text8_skipgram",
                          "text8_cbow")}
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
           PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
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
  return subprocess.run([sys.executable, "-m", "word2vec", *map(str, args)], cwd=cwd, env=ENV,
                        capture_output=True, text=True, timeout=TIMEOUT, check=False)


def run_parallel(jobs):
  """{name: callable returning a CompletedProcess} -> {name: result}, two at a time."""
  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    futures = {name: pool.submit(job) for name, job in jobs.items()}
    return {name: future.result() for name, future in futures.items()}


def show(res):
  return f"exit {res.returncode}\n--- stdout\n{res.stdout[-3000:]}\n--- stderr\n{res.stderr[-6000:]}"


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


def checkpoint_embeddings(run_dir):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  reader = tf.train.load_checkpoint(os.path.join(run_dir, "checkpoints"))
  return reader.get_tensor("input_embeddings/.ATTRIBUTES/VARIABLE_VALUE")


def event_files(run_dir):
  return sorted(glob.glob(os.path.join(run_dir, "train", "events.out.tfevents.*")))


def read_scalars(paths):
  """{tag: [(step, value)] sorted by step} of the train/ and eval/ scalars in event files."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  scalars = {}
  for path in paths:
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if not value.tag.startswith(("train/", "eval/")):
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
    res = word2vec("train", *self.train_args(flagfile, model_dir), cwd=self.root)
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


# ---------------------------------------------------------------- eval, export, vocab

EXPORTS = {"word2vec": "vectors.txt", "word2vec_binary": "vectors.bin",
           "projector": "projector_out", "npy": "npy_out" + os.sep}


@pytest.fixture(scope="module")
def actions(runs):
  """eval, every export format and vocab, run on the trained skip-gram run."""
  run_dir, _ = runs.trained("skipgram_nce")
  os.remove(os.path.join(run_dir, "eval.json"))  # eval must write it again
  model_dir = "runs/skipgram_nce"
  jobs = {"eval": lambda: word2vec("eval", f"--model_dir={model_dir}", "--words=queenalpha",
                                   cwd=runs.root),
          "vocab": lambda: word2vec("vocab", "--corpus=corpus.txt", "--output=vocab_out.tsv",
                                    cwd=runs.root)}
  for fmt, output in EXPORTS.items():
    jobs[fmt] = (lambda fmt=fmt, output=output: word2vec(
        "export", f"--model_dir={model_dir}", f"--format={fmt}", f"--output={output}",
        cwd=runs.root))
  # The binary export reads a copy of the run moved elsewhere, from another cwd: config.json
  # records the training's relative --model_dir, which must not be where checkpoints are read.
  moved = os.path.join(runs.root, "moved", "sg")
  shutil.copytree(run_dir, moved)
  elsewhere = os.path.join(runs.root, "elsewhere")
  os.makedirs(elsewhere)
  jobs["word2vec_binary"] = lambda: word2vec(
      "export", f"--model_dir={moved}", "--format=word2vec_binary",
      f"--output={os.path.join(runs.root, EXPORTS['word2vec_binary'])}", cwd=elsewhere)
  return run_parallel(jobs)


def test_eval_prints_json_and_rewrites_eval_json(runs, actions):
  run_dir, trained = runs.trained("skipgram_nce")
  res = actions["eval"]
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
    from data import embedding_formats  # pylint: disable=import-outside-toplevel
    return embedding_formats.load_word2vec(path, binary=binary)
  kv = KeyedVectors.load_word2vec_format(path, binary=binary)
  return list(kv.index_to_key), kv.vectors


@pytest.mark.parametrize("fmt", list(EXPORTS))
def test_export_writes_loadable_files_in_vocab_order(runs, actions, fmt):
  run_dir, _ = runs.trained("skipgram_nce")
  res = actions[fmt]
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


def test_vocab_action_writes_the_runs_vocab(runs, actions):
  run_dir, _ = runs.trained("skipgram_nce")
  assert_ok(actions["vocab"])
  with open(os.path.join(runs.root, "vocab_out.tsv"), "rb") as f:
    written = f.read()
  with open(os.path.join(run_dir, "vocab.tsv"), "rb") as f:
    assert written == f.read()


# ---------------------------------------------------------------- resume

def test_resume_continues_the_step_counter_and_the_schedule(runs):
  run_dir, _ = runs.trained("skipgram_nce")
  resumed_dir = os.path.join(runs.root, "runs", "resumed")
  shutil.copytree(run_dir, resumed_dir)
  first = checkpoint_numbers(resumed_dir)[-1]
  old_events = event_files(resumed_dir)
  old_lr = read_scalars(old_events)["train/learning_rate"]
  res = word2vec("train", *runs.train_args("skipgram_nce", "runs/resumed", "--epochs=4"),
                 cwd=runs.root)
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


def test_incompatible_run_is_refused_and_resume_false_starts_over(runs, other_commands):
  cbow_dir, _ = runs.trained("cbow_sampled_softmax")
  other = os.path.join(runs.root, "runs", "reused")  # a skip-gram run (see other_commands)
  assert_user_error(other_commands["incompatible"], "--model_dir=runs/reused", "incompatible",
                    "--model='cbow'", "'skipgram'", "--loss=", "--resume=false")
  assert read_json(os.path.join(other, "config.json"))["model"] == "skipgram"  # untouched

  args = runs.train_args("cbow_sampled_softmax", "runs/reused")
  res = word2vec("train", *args, "--resume=false", cwd=runs.root)
  assert_ok(res)
  assert "starting over" in res.stderr and "resumed from" not in res.stderr
  config = read_json(os.path.join(other, "config.json"))
  assert (config["model"], config["loss"]) == ("cbow", "sampled_softmax")
  # Steps count from 0 again: same checkpoints as the cbow run trained from scratch.
  assert checkpoint_numbers(other)[-1] == checkpoint_numbers(cbow_dir)[-1]
  assert len(event_files(other)) == 1, "the skip-gram run's summaries must be gone"
  figures = read_json(os.path.join(other, "eval.json"))
  assert LOSS_KEY["sampled_softmax"] in figures and LOSS_KEY["nce"] not in figures


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path):
  with open(tmp_path / "big.txt", "w", encoding="utf-8") as f:
    f.write(make_corpus(15000, seed=1))
  # Also shows flags/text8_cbow.cfg parses and applies (config.json is checked below).
  args = ["train", f"--flagfile={FLAGFILES['text8_cbow']}", "--corpus=big.txt",
          "--model_dir=runs/killed", "--epochs=1", "--embedding_dim=8", "--batch_size=32",
          "--steps_per_call=2", "--chunk_tokens=1000", "--checkpoint_every_steps=20",
          "--eval_examples=16", "--words=kingalpha"]
  run_dir = tmp_path / "runs" / "killed"
  marker = run_dir / "checkpoints" / "checkpoint"
  with open(tmp_path / "killed.log", "w", encoding="utf-8") as log:
    proc = subprocess.Popen([sys.executable, "-m", "word2vec", *args], cwd=tmp_path, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=log)
    try:
      deadline = time.monotonic() + TIMEOUT
      while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
      still_running = proc.poll() is None
      proc.send_signal(signal.SIGKILL)
    finally:
      proc.kill()
      proc.wait()
  assert still_running, "training ended before its first checkpoint: " + (
      tmp_path / "killed.log").read_text()
  assert checkpoint_numbers(run_dir), "killed before any checkpoint was written"
  killed_at = checkpoint_numbers(run_dir)[-1]
  assert not (run_dir / "eval.json").exists()

  res = word2vec(*args, cwd=tmp_path)
  assert_ok(res)
  match = re.search(r"resumed from \S+: epoch 0, chunk (\d+), step (\d+)", res.stderr)
  assert match, show(res)
  assert int(match.group(1)) > 0 and int(match.group(2)) == killed_at
  assert checkpoint_numbers(run_dir)[-1] > int(match.group(2))
  assert "heldout_full_softmax_loss" in read_json(run_dir / "eval.json")
  assert (run_dir / "train" / "vectors.tsv").exists()
  assert not partial_files(str(run_dir))
  assert_flagfile_applied(run_dir / "config.json", "text8_cbow",
                          corpus="big.txt", model_dir="runs/killed", epochs=1, embedding_dim=8)


# ---------------------------------------------------------------- mistakes and help

@pytest.fixture(scope="module")
def other_commands(runs):
  """Commands with a mistake (and the odd ones that must succeed), run two at a time."""
  _, _ = runs.trained("skipgram_nce")
  root = runs.root
  with open(os.path.join(root, "empty.txt"), "w", encoding="utf-8") as f:
    f.write("  ,,, !!! 123 \n\n ... \t\n")
  good = make_corpus(3000, seed=2).encode("utf-8")
  # 5 invalid bytes: a lone 0xff, 0xfe 0xfd, a truncated 2-byte sequence, a stray continuation.
  with open(os.path.join(root, "latin.txt"), "wb") as f:
    f.write(good[:1000] + b" \xff " + good[1000:2000] + b" \xfe\xfd caf\xc3 " +
            good[2000:3000] + b" \x80 " + good[3000:])
  shutil.copytree(os.path.join(root, "runs", "skipgram_nce"), os.path.join(root, "runs",
                                                                         "reused"))
  nockpt = os.path.join(root, "runs", "nockpt")
  shutil.copytree(os.path.join(root, "runs", "skipgram_nce"), nockpt)
  shutil.rmtree(os.path.join(nockpt, "checkpoints"))
  fast = ("--embedding_dim=8",) + FAST

  def cmd(*args):
    return lambda: word2vec(*args, cwd=root)

  jobs = {
      "missing_corpus": cmd("train", "--corpus=missing.txt", "--model_dir=runs/m1", *fast),
      "empty_corpus": cmd("train", "--corpus=empty.txt", "--model_dir=runs/m2", *fast),
      "num_sampled": cmd("train", "--corpus=corpus.txt", "--model_dir=runs/m3",
                         "--num_sampled=1000", *fast),
      # Also shows flags/text8_skipgram.cfg parses and applies.
      "non_utf8": cmd("train", f"--flagfile={FLAGFILES['text8_skipgram']}", "--corpus=latin.txt",
                      "--model_dir=runs/latin", *fast),
      "incompatible": cmd("train", *runs.train_args("cbow_sampled_softmax", "runs/reused")),
      "sampler": cmd("train", "--corpus=corpus.txt", "--sampler=zipf", "--model_dir=runs/m4"),
      "model": cmd("train", "--corpus=corpus.txt", "--model=glove", "--model_dir=runs/m5"),
      "loss": cmd("train", "--corpus=corpus.txt", "--loss=hinge", "--model_dir=runs/m6"),
      "export_no_checkpoint": cmd("export", "--model_dir=runs/nockpt", "--output=n.txt"),
      "export_no_run": cmd("export", "--model_dir=runs/none", "--output=none.txt"),
      "export_no_output": cmd("export", "--model_dir=runs/skipgram_nce", "--format=npy"),
      "unknown_action": cmd("fly", "--model_dir=runs/skipgram_nce"),
      "no_action": cmd("--model_dir=runs/skipgram_nce"),
      "helpfull": cmd("--helpfull"),
  }
  return run_parallel(jobs)


@pytest.mark.parametrize("name, needles", [
    ("missing_corpus", ["'missing.txt'", "does not exist", "--corpus="]),
    ("empty_corpus", ["empty.txt", "no tokens"]),
    ("num_sampled", ["--num_sampled=1000", "55 words"]),
    ("export_no_checkpoint", ["--model_dir=runs/nockpt", "no checkpoint"]),
    ("export_no_run", ["--model_dir=runs/none", "no word2vec run", "word2vec train"]),
    ("export_no_output", ["--output"]),
    ("unknown_action", ["expected one action", "'fly'", "train,eval,export,vocab"]),
    ("no_action", ["expected one action", "train,eval,export,vocab"]),
])
def test_user_mistake_ends_in_one_error_line(other_commands, runs, name, needles):
  assert_user_error(other_commands[name], *needles)
  assert not os.path.exists(os.path.join(runs.root, "none.txt"))
  assert not os.path.exists(os.path.join(runs.root, "runs", "none")), \
      "a failed export must not create the run directory"


@pytest.mark.parametrize("name, flag, value", [
    ("sampler", "sampler", "zipf"), ("model", "model", "glove"), ("loss", "loss", "hinge")])
def test_unknown_enum_value_names_the_flag(other_commands, name, flag, value):
  res = other_commands[name]
  assert res.returncode != 0, show(res)
  assert f"--{flag}={value}" in res.stderr and "value should be one of" in res.stderr, show(res)
  assert "Traceback" not in res.stderr, show(res)


def test_invalid_utf8_is_replaced_counted_and_training_succeeds(other_commands, runs):
  res = other_commands["non_utf8"]
  assert_ok(res)
  assert not error_lines(res)
  assert "5 invalid UTF-8 bytes were replaced" in res.stderr, show(res)
  run_dir = os.path.join(runs.root, "runs", "latin")
  assert LOSS_KEY["nce"] in read_json(os.path.join(run_dir, "eval.json"))
  # The replaced bytes split no word: the vocabulary is the clean corpus's ("caf" is the only
  # new word, seen once, below --min_count).
  assert sorted(w for w, _ in read_vocab(run_dir)[1:]) == sorted(
      [t + s for t in TOPICS for s in SUFFIXES] + list(FILLERS))
  assert_flagfile_applied(os.path.join(run_dir, "config.json"), "text8_skipgram",
                          corpus="latin.txt", model_dir="runs/latin", embedding_dim=8,
                          batch_size=64)


def test_helpfull_documents_every_flag(other_commands):
  res = other_commands["helpfull"]
  assert res.returncode in (0, 1), show(res)  # absl exits 1 after printing help
  assert "Traceback" not in res.stderr
  with open(os.path.join(ROOT, "flags", "word2vec_flags.py"), encoding="utf-8") as f:
    defined = re.findall(r"DEFINE_\w+\(\s*\"(\w+)\"", f.read())
  for name in ("num_sampled", "sampler", "subsample", "window", "model_dir", "corpus"):
    assert name in defined
  for name in defined:
    assert re.search(rf"^\s+--(\[no\])?{name}: \S", res.stdout, re.M), name


STANDARD = {"sampler": "unigram", "embedding_dim": 100, "window": 5, "num_sampled": 5,
            "subsample": 1e-3, "min_count": 5, "epochs": 3}
FLAGFILE_VALUES = {
    "skipgram_nce": dict(STANDARD, model="skipgram", loss="nce", corpus=""),
    "cbow_sampled_softmax": dict(STANDARD, model="cbow", loss="sampled_softmax", corpus=""),
    "text8_skipgram": dict(STANDARD, model="skipgram", loss="nce", corpus="text8"),
    "text8_cbow": dict(STANDARD, model="cbow", loss="sampled_softmax", corpus="text8"),
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
  # The two bundled-corpus files are trained with in test_train_..., text8_skipgram in
  # test_invalid_utf8_..., text8_cbow in test_killed_run_...: each parses and applies. Here:
  # their text, which a user reads.
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
