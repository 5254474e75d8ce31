"""The run directory of both apps: config.json, the train lock, start over, checkpoints,
TensorBoard summaries, hparams, eval.json and the projector files.

Layout (both apps; the apps add their own files beside these):
  config.json    the resolved config the weights were trained with, plus `changes`: the
                 settings that changed on a resume and the step they took effect at
  lock           held (flock) by the training process for its whole life; holds its PID
  checkpoints/   tf.train.CheckpointManager files (twotower runs made before read `ckpt/`)
  train/, eval/  TensorBoard summaries (`summary_writer`); train/ also holds the hparams
                 (`write_hparams`) and the projector files (`write_projector`), beside its
                 event files: `tensorboard --logdir` at the run or at a directory of runs
                 finds them
  eval.json      the figures of the last evaluation (`save_eval`)

The recorded config is never silently rewritten: once a checkpoint exists, a config that
differs in anything but the `free` settings (logging and evaluation cadence, more epochs)
is refused with the differing fields named; `--resume=false` starts over.
"""
import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import shutil
import weakref

from absl import logging

from tf_embeddings.data import embedding_formats
from tf_embeddings.data.atomic import atomic_write
from tf_embeddings.data.errors import UserError

CONFIG_FILE = "config.json"
LOCK_FILE = "lock"
CHECKPOINT_DIR = "checkpoints"
TRAIN_LOGS = "train"
EVAL_LOGS = "eval"
EVAL_FILE = "eval.json"
# Where the run is and how this command treats it: free, and not recorded as changes.
UNTRACKED = ("model_dir", "resume")
OLD_CHECKPOINT_DIRS = ("ckpt",)  # twotower runs made before checkpoints/

# Every summary writer `RunDir.summary_writer` made that is still alive: closed by
# `close_summary_writers` before a command ends its process (training.app.run_and_exit).
_WRITERS = weakref.WeakSet()


def close_summary_writers():
  """Flushes and closes the summary writers still open (their events on disk, whole)."""
  for writer in list(_WRITERS):
    writer.close()
  _WRITERS.clear()


def config_to_dict(config):
  """A (nested) config dataclass as JSON-ready dict: tuples become lists."""
  def plain(v):
    if isinstance(v, (list, tuple)):
      return [plain(x) for x in v]
    if isinstance(v, dict):
      return {k: plain(x) for k, x in v.items()}
    return v
  return plain(dataclasses.asdict(config))


def config_from_dict(cls, d):
  """Rebuilds a (nested) config dataclass; unknown keys are ignored, lists become tuples.

  A field missing from d takes the class's `LEGACY_DEFAULTS` value if it has one (what runs
  recorded before the field existed did), else its default.
  """
  kw = {}
  legacy = getattr(cls, "LEGACY_DEFAULTS", {})
  for f in dataclasses.fields(cls):
    if f.name not in d:
      if f.name in legacy:
        kw[f.name] = legacy[f.name]
      continue
    v = d[f.name]
    default = f.default if f.default is not dataclasses.MISSING else None
    if dataclasses.is_dataclass(default) and isinstance(v, dict):
      v = config_from_dict(type(default), v)
    elif isinstance(v, list):
      v = tuple(v)
    kw[f.name] = v
  return cls(**kw)


def flatten(d, prefix=""):
  """{"model": {"dim": 8}} -> {"model.dim": 8}."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
  return out


def hparams_values(config, extra=None):
  """{flattened key: value} of a config (plus `extra`) for TensorBoard's HParams plugin.

  What config.json records, less where the run is (UNTRACKED) and unset (None) values;
  values that are not bool, int, float or str become their JSON text.
  """
  d = config_to_dict(config)
  d.update(extra or {})
  values = {}
  for key, value in flatten(d).items():
    if key in UNTRACKED or value is None:
      continue
    if not isinstance(value, (bool, int, float, str)):
      value = json.dumps(list(value) if isinstance(value, tuple) else value)
    values[key] = value
  return values


def _pid_alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class RunDir:
  """One run directory: claims it, records and checks its config, manages its checkpoints.

  Args:
    path: the --model_dir.
    config_class: the app's config dataclass (saved and loaded as config.json).
    free: flattened config keys that may change on resume without changing what was
      learned so far (cadences, evaluation settings, where the run is).
    monotone: free keys that may only grow (epochs: extend a run, never shorten it).
    flag_name: key -> the flag a user changes, for messages.
  """

  def __init__(self, path, config_class, free=(), monotone=(), flag_name=None):
    self.path = os.fspath(path)
    self.config_class = config_class
    self.free = frozenset(free) | frozenset(UNTRACKED)
    self.monotone = frozenset(monotone)
    self.flag_name = flag_name or (lambda key: key.rsplit(".", 1)[-1])
    self._lock_file = None

  # ------------------------------------------------------------------ paths

  def file(self, *parts):
    return os.path.join(self.path, *parts)

  @property
  def config_path(self):
    return self.file(CONFIG_FILE)

  @property
  def checkpoint_dir(self):
    """checkpoints/, or the old name where a run made before has only that."""
    new = self.file(CHECKPOINT_DIR)
    if not os.path.isdir(new):
      for old in OLD_CHECKPOINT_DIRS:
        if os.path.isdir(self.file(old)):
          return self.file(old)
    return new

  def exists(self):
    return os.path.exists(self.config_path)

  def check_usable(self):
    """UserError unless the run directory is (or can be made) a writable directory."""
    if os.path.exists(self.path) and not os.path.isdir(self.path):
      raise UserError(f"--model_dir={self.path} is a file, not a directory: pass a "
                      "directory for the run")
    probe = self.path
    while not os.path.exists(probe):
      parent = os.path.dirname(os.path.abspath(probe))
      if parent == os.path.abspath(probe):
        break
      probe = parent
    if not os.path.isdir(probe):
      raise UserError(f"--model_dir={self.path}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
      raise UserError(f"--model_dir={self.path} is not writable ({probe}): pass a "
                      "directory you can write to")

  def create(self):
    self.check_usable()
    try:
      os.makedirs(self.path, exist_ok=True)
    except OSError as e:
      raise UserError(f"--model_dir={self.path} cannot be created ({e.strerror})") from None

  # ------------------------------------------------------------------ config

  def load_raw(self):
    """The config.json of the run as a dict, or None."""
    if not os.path.exists(self.config_path):
      return None
    try:
      with open(self.config_path, encoding="utf-8") as f:
        d = json.load(f)
    except (OSError, ValueError) as e:
      raise UserError(f"{self.config_path} is unreadable ({e}): pass another --model_dir, "
                      "or --resume=false to start over there") from None
    if not isinstance(d, dict):
      raise UserError(f"{self.config_path} is not a run config: pass another --model_dir")
    return d

  def load_config(self, required=True, what="run", hint="train one first"):
    """The recorded config (its model_dir replaced by this directory), or None."""
    d = self.load_raw()
    if d is None:
      if required:
        raise UserError(f"--model_dir={self.path} holds no {what} (no {CONFIG_FILE}): "
                        f"{hint}")
      return None
    try:
      config = config_from_dict(self.config_class, d)
    except (TypeError, ValueError, KeyError) as e:
      raise UserError(f"{self.config_path} is not a {what} config ({e})") from None
    if "model_dir" in {f.name for f in dataclasses.fields(self.config_class)}:
      config = dataclasses.replace(config, model_dir=self.path)
    return config

  def differences(self, old, new):
    """[(key, old value, new value)] of the fields that forbid resuming `old` as `new`."""
    a, b = flatten(config_to_dict(old)), flatten(config_to_dict(new))
    diffs = []
    for key in sorted(set(a) | set(b)):
      va, vb = a.get(key), b.get(key)
      if va == vb:
        continue
      if key in self.monotone and va is not None and vb is not None and vb >= va:
        continue
      if key in self.free and key not in self.monotone:
        continue
      diffs.append((key, va, vb))
    return diffs

  def check_compatible(self, old, new):
    diffs = self.differences(old, new)
    if diffs:
      shown = ", ".join(f"--{self.flag_name(k)}={vb!r} vs {va!r} in the run"
                        for k, va, vb in diffs)
      raise UserError(f"--model_dir={self.path} holds an incompatible run ({shown}): use "
                      "another --model_dir, the run's flags, or --resume=false to start "
                      "over there")

  def save_config(self, config, step=0, extra=None, fresh=False):
    """Records `config`: the first time (or `fresh`: nothing trained yet) as is, later with
    the free settings that changed.

    The recorded values are the current ones; `changes` lists, per resume, the step it
    started at and {key: [old, new]} of what changed.
    """
    old = None if fresh else self.load_raw()
    d = config_to_dict(config)
    if extra:
      d.update(extra)
    if old is not None:
      changes = list(old.get("changes", []))
      before = flatten({k: v for k, v in old.items() if k != "changes"})
      after = flatten(d)
      changed = {k: [before.get(k), after[k]] for k in sorted(after)
                 if k in self.free and k not in UNTRACKED and before.get(k) != after[k]}
      if changed:
        changes.append({"step": int(step), "changed": changed})
      if changes:
        d["changes"] = changes
    with atomic_write(self.config_path) as f:
      json.dump(d, f, indent=2, sort_keys=True)
      f.write("\n")

  # ------------------------------------------------------------------ lock

  def lock(self):
    """Takes the run's exclusive train lock (UserError naming the PID holding it).

    The lock is an flock on `lock`, which the kernel releases when the process ends, so a
    lock left by a killed process is simply taken over.
    """
    if self._lock_file is not None:
      return
    path = self.file(LOCK_FILE)
    try:
      f = open(path, "a+", encoding="utf-8")  # pylint: disable=consider-using-with
    except OSError as e:
      raise UserError(f"--model_dir={self.path}: cannot create {path} ({e.strerror})") from None
    try:
      fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      f.seek(0)
      holder = f.read().strip() or "?"
      f.close()
      if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise UserError(f"run directory {self.path} is in use by process {holder}: wait "
                        "for it to end or use another --model_dir") from None
      raise
    f.seek(0)
    previous = f.read().strip()
    if previous.isdigit() and int(previous) != os.getpid():
      state = "still running" if _pid_alive(int(previous)) else "no longer running"
      logging.info("taking over the lock of %s left by process %s (%s)", path, previous,
                   state)
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    self._lock_file = f

  def unlock(self):
    if self._lock_file is None:
      return
    with contextlib.suppress(OSError):
      self._lock_file.seek(0)
      self._lock_file.truncate()
      self._lock_file.flush()
      fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
    self._lock_file.close()
    self._lock_file = None

  @contextlib.contextmanager
  def locked(self):
    self.lock()
    try:
      yield self
    finally:
      self.unlock()

  @contextlib.contextmanager
  def training(self):
    """The life of one train, for both apps: creates the directory, holds the lock, and if
    the train fails before the run is set up (no config.json yet) removes the directory
    again when this call created it: a bad corpus or flag leaves nothing behind."""
    created = not os.path.exists(self.path)
    self.create()
    with self.locked():
      try:
        yield self
      except BaseException:
        if created and not self.exists():
          shutil.rmtree(self.path, ignore_errors=True)
        raise

  # ------------------------------------------------------------------ start over

  def start_over(self, names):
    """Removes the run's own files and directories `names` (nothing else; the lock stays)."""
    logging.info("--resume=false: starting over in %s", self.path)
    for name in names:
      path = self.file(name)
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
      elif os.path.lexists(path):
        os.remove(path)

  def prepare_train(self, config, resume, names):
    """What a train does first, for both apps: starts over (removing the run's own files
    `names`) when resume is false, else checks that `config` may continue the recorded run.

    Returns:
      Whether training resumes from a checkpoint.
    """
    if not resume:
      if any(os.path.lexists(self.file(name)) for name in names):
        self.start_over(names)
      return False
    if not self.has_checkpoint():
      return False
    saved = self.load_config(required=False)
    if saved is None:
      raise UserError(f"--model_dir={self.path} holds checkpoints but no {CONFIG_FILE}: use "
                      "another --model_dir, or --resume=false to start over there")
    self.check_compatible(saved, config)
    return True

  # ------------------------------------------------------------------ TensorBoard, eval.json

  def summary_writer(self, name=TRAIN_LOGS):
    """A tf.summary writer into the run's `name` directory (TRAIN_LOGS or EVAL_LOGS)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    writer = tf.summary.create_file_writer(self.file(name))
    _WRITERS.add(writer)
    return writer

  def write_hparams(self, writer, config, extra=None, metrics=None):
    """Records the run's resolved config with `writer` at step 0: the HParams plugin's
    summary (`hparams_values(config, extra)`) and the same as a text summary `hparams`;
    `metrics` ({name: number}, optional) as scalars `hparams_metric/<name>`."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    values = hparams_values(config, extra)
    with writer.as_default(step=0):
      try:
        from tensorboard.plugins.hparams import api as hp  # pylint: disable=import-outside-toplevel
      except ImportError:  # pragma: no cover (TensorFlow depends on tensorboard)
        pass
      else:
        hp.hparams(values)
      tf.summary.text("hparams", "\n".join(f"    {k} = {v}" for k, v in sorted(values.items())))
      for name, value in (metrics or {}).items():
        tf.summary.scalar(f"hparams_metric/{name}", value)

  def save_eval(self, figures):
    """Writes eval.json (whole or not at all), replacing the one of an earlier evaluation."""
    with atomic_write(self.file(EVAL_FILE)) as f:
      json.dump(figures, f, indent=2, sort_keys=True)
      f.write("\n")

  def write_projector(self, labels, vectors, **kwargs):
    """Writes the projector files (`data.embedding_formats.save_projector(directory, labels,
    vectors, **kwargs)`) beside the train summaries, where TensorBoard's Projector finds
    them. Returns the paths written."""
    return embedding_formats.save_projector(self.file(TRAIN_LOGS), labels, vectors, **kwargs)

  # ------------------------------------------------------------------ checkpoints

  def checkpoint_manager(self, checkpoint, max_to_keep=3):
    """A tf.train.CheckpointManager over checkpoint_dir (after removing partial saves when
    this process holds the lock)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    if self._lock_file is not None:
      remove_partial_checkpoints(self.checkpoint_dir)
    return tf.train.CheckpointManager(checkpoint, self.checkpoint_dir, max_to_keep=max_to_keep)

  def latest_checkpoint(self):
    directory = self.checkpoint_dir
    if not os.path.isdir(directory):
      return None  # without importing TensorFlow (a new run is prepared while it imports)
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    return tf.train.latest_checkpoint(directory)

  def has_checkpoint(self):
    return self.latest_checkpoint() is not None


def remove_partial_checkpoints(directory):
  """Deletes the `<name>_temp` directories a save killed half-way leaves behind.

  TensorFlow writes a checkpoint under a temporary name and renames it when complete; the
  last complete checkpoint is untouched, so only the unfinished one is lost. Call only
  while holding the run's lock: another trainer's save in flight looks the same.
  """
  if not os.path.isdir(directory):
    return
  for name in os.listdir(directory):
    if name.endswith("_temp"):
      logging.info("removing %s, a checkpoint whose save was interrupted", name)
      shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


def fingerprint(paths):
  """What the input files are: [{path, size, mtime_ns, sha256}] (cached artefacts built
  from them are reused only while this is unchanged)."""
  import hashlib  # pylint: disable=import-outside-toplevel
  out = []
  for path in sorted(set(os.path.abspath(p) for p in paths)):
    st = os.stat(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
    out.append({"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                "sha256": digest.hexdigest()})
  return out
