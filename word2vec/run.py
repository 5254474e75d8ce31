"""The first part of a word2vec train, without TensorFlow: the run's own files, the phases
of its wall time, and `prepare` (start over or check the recorded run, then the vocabulary
and the encoded ids). The app runs `prepare` while TensorFlow is imported
(training/app.py import_tensorflow_while): the corpus pass hides most of the 3-4 s import.
"""
import collections
import os

from tf_embeddings.training import rundir as rundir_lib
from tf_embeddings.word2vec import inputs

TIMINGS_FILE = "timings.json"
# The phases of a `word2vec train` command, in order, as timings.json records them (seconds).
PHASES = ("startup", "vocabulary", "encoding", "setup", "compilation", "training",
          "evaluation", "checkpoints", "export")
# The run's own files: what --resume=false removes (nothing else in the directory).
RUN_FILES = (rundir_lib.CHECKPOINT_DIR, rundir_lib.TRAIN_LOGS, inputs.VOCAB_FILE,
             inputs.IDS_FILE, inputs.IDS_META, "eval.json", TIMINGS_FILE,
             rundir_lib.CONFIG_FILE)

# What `prepare` hands to training: whether the run resumes, its Vocabulary and ids memmap.
Prepared = collections.namedtuple("Prepared", ["has_checkpoint", "vocab", "ids"])


def seconds_since_process_start():
  """Seconds since this process started (Linux /proc; None elsewhere)."""
  try:
    with open("/proc/self/stat", encoding="ascii") as f:
      start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime", encoding="ascii") as f:
      uptime = float(f.read().split()[0])
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
  except (OSError, ValueError, IndexError, AttributeError):
    return None


def new_timings():
  """The phases of this command, all 0.0."""
  return dict.fromkeys(PHASES, 0.0)


def prepare(config, rundir, timings, stop=None, beside_import=False):
  """Starts over (--resume=false) or checks that `config` may continue the recorded run,
  then builds or reuses the vocabulary and encoded ids (inputs.prepare_data, which fills
  timings' "vocabulary" and "encoding"). Call it holding the run's lock (RunDir.training).

  stop: optional threading.Event; once set, the corpus pass stops (prepare_data).
  beside_import: TensorFlow is imported meanwhile (prepare_data).

  Returns:
    Prepared.
  """
  has_checkpoint = rundir.prepare_train(config, config.resume, RUN_FILES)
  vocab, ids = inputs.prepare_data(config, require_cached=has_checkpoint, timings=timings,
                                   stop=stop, beside_import=beside_import)
  return Prepared(has_checkpoint, vocab, ids)
