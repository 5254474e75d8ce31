"""Runs an absl app so that a user's mistake ends in one line, not a traceback; imports
TensorFlow without its start-up noise."""
import atexit
import logging as std_logging
import os
import re
import sys
import tempfile
import threading

from absl import app
from absl import flags
from absl import logging

from tf_embeddings.data import fetch
from tf_embeddings.data.errors import UserError


def _fail(message):
  sys.stderr.write(f"error: {message}\n")
  sys.stderr.flush()
  sys.exit(2)


HELP_ARGS = ("-h", "-?", "--help", "--helpshort")
XLA_CACHE_FLAG = "--tf_xla_persistent_cache_directory"


def use_xla_compile_cache():
  """Keeps XLA's compiled programs on disk (`<cache>/xla`), so that a command run again with
  the same shapes skips compilation (word2vec CBOW on this 2-core machine: 10.5 s -> 1.2 s).

  XLA keys each program by its HLO fingerprint and the TensorFlow build, so a changed step
  or version compiles anew. Call before TensorFlow is imported; a TF_XLA_FLAGS that already
  names a cache directory is left alone, and EMBEDDINGS_XLA_CACHE=0 turns it off.
  """
  current = os.environ.get("TF_XLA_FLAGS", "")
  if os.environ.get("EMBEDDINGS_XLA_CACHE", "1") == "0" or XLA_CACHE_FLAG in current:
    return
  directory = os.path.join(fetch.cache_dir(), "xla")
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError:
    return  # no writable cache: compile every time, as before
  os.environ["TF_XLA_FLAGS"] = f"{current} {XLA_CACHE_FLAG}={directory}".strip()


def app_help(usage, flag_module):
  """The app's --help: its usage (actions) and its own flags, not absl's."""
  text = usage.rstrip() + "\n"
  if flag_module:
    listed = flags.FLAGS.module_help(flag_module).strip().splitlines()
    if listed and listed[0].strip() == flag_module + ":":
      listed = listed[1:]                                  # absl's module-name heading
    text += "\nflags:\n" + "\n".join(listed) + "\n"
  return text + "\n(--helpfull also lists absl's own flags)\n"


def parse_flags(argv, usage=None, flag_module=None):
  """absl's flag parsing, with a flag error as one `error: ...` line and exit 2 (absl's own
  prints `FATAL Flags parsing error` and exits 1); --help prints `app_help` and exits 0."""
  if usage and any(a in HELP_ARGS for a in argv[1:]):
    sys.stdout.write(app_help(usage, flag_module))
    sys.exit(0)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(" ".join(str(e).split()) + " (--helpfull lists the flags)")


INTERRUPTED = "interrupted: resume with the same command (checkpoints are kept)\n"


def run(main, usage=None, flag_module=None):
  """Like `absl.app.run(main)`, printing `error: <message>` and exiting 2 on UserError.

  usage, flag_module: what `--help` prints (the actions, and the flags defined in that
  module); it answers before anything heavy is imported.
  """

  def guarded(argv):
    try:
      return main(argv)
    except UserError as e:
      _fail(e)
    except KeyboardInterrupt:
      sys.stderr.write(INTERRUPTED)
      sys.exit(130)

  app.run(guarded, flags_parser=lambda argv: parse_flags(argv, usage, flag_module))


def run_and_exit(command):
  """Runs `command` (an app's `run`, which ends in sys.exit) and ends the process with its
  exit status, skipping the interpreter's teardown.

  A process that imported TensorFlow spends about 1 s after its last atexit handler
  (module teardown, TensorFlow's C++ destructors): 2-5% of a word2vec run. Everything the
  command wrote is complete by then (files are written atomically and closed; the summary
  writers are closed here), the atexit handlers still run (absl's and logging's flushes),
  and stdout / stderr are flushed; then os._exit. An exception other than SystemExit
  propagates as usual (its traceback printed by the normal exit).
  """
  try:
    command()
    code = 0
  except SystemExit as e:
    code = e.code
  if code is None:
    code = 0
  elif not isinstance(code, int):
    sys.stderr.write(f"{code}\n")
    code = 1
  rundir = sys.modules.get("tf_embeddings.training.rundir")
  if rundir is not None:
    rundir.close_summary_writers()
  atexit._run_exitfuncs()  # pylint: disable=protected-access
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass
  os._exit(code)


# What TensorFlow's C++ side writes to stderr while it is imported on a CPU machine: before
# absl::InitializeLog, so TF_CPP_MIN_LOG_LEVEL does not hide it. Matched line by line.
STARTUP_NOISE = tuple(re.compile(p) for p in (
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
    r"STDERR",
    r"[IW]\d{4} [\d:.]+ +\d+ port\.cc:\d+\] oneDNN custom operations are on\.",
    r"[IW]\d{4} [\d:.]+ +\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers",
    r"[IW]\d{4} [\d:.]+ +\d+ cpu_feature_guard\.cc:\d+\] This TensorFlow binary is "
    r"optimized",
    r"To enable the following instructions: .*, in other operations, rebuild TensorFlow "
    r"with the appropriate compiler flags\.$",
))
# No GPU driver (the cudart_stub line above): then the failed cuInit is noise too.
NO_CUDA_DRIVER = re.compile(r"cudart_stub\.cc:\d+\] Could not find cuda drivers")
CUINIT_FAILED = re.compile(r"E\d{4} [\d:.]+ +\d+ cuda_platform\.cc:\d+\] failed call to "
                           r"cuInit")
# What TensorFlow's Python side logs through absl that is dropped unless --verbosity asks
# (one line per checkpoint save).
DROPPED_LOG_MESSAGES = ("Sharding callback duration",)
# --verbosity from which TensorFlow's start-up lines and C++ INFO logs are shown (absl's
# DEBUG: they are TensorFlow's internals, not this app's progress).
VERBOSE_TENSORFLOW = 1


def drop_startup_noise(text):
  """`text` (what TensorFlow wrote to stderr during its import) less the known noise lines.

  Every other line is kept, in order: an import that fails for a real reason still says
  why.
  """
  lines = text.splitlines(keepends=True)
  cpu_only = any(NO_CUDA_DRIVER.search(line) for line in lines)
  kept = []
  for line in lines:
    if any(p.match(line) for p in STARTUP_NOISE):
      continue
    if cpu_only and CUINIT_FAILED.match(line):
      continue
    kept.append(line)
  return "".join(kept)


class _DropMessages(std_logging.Filter):
  """Drops TensorFlow's absl log records that start with one of DROPPED_LOG_MESSAGES."""

  def filter(self, record):
    from_tensorflow = f"{os.sep}tensorflow{os.sep}" in (record.pathname or "")
    return not (from_tensorflow and str(record.msg).startswith(DROPPED_LOG_MESSAGES))


_DROP_MESSAGES = _DropMessages()


def import_tensorflow():
  """Imports TensorFlow for an app's real work and returns it; quiet unless --verbosity >= 1.

  Sets TF_CPP_MIN_LOG_LEVEL=3 where the user has not set it (TensorFlow's C++ side logs
  no INFO, WARNING or ERROR lines: the errors that matter reach Python as exceptions, and
  on a CPU machine the logged ones are noise: the failed cuInit, XLA's cache entries
  compiled for another CPU), drops DROPPED_LOG_MESSAGES from absl's log, and holds file
  descriptor 2 in a temporary file while TensorFlow is imported and the devices are listed
  (where a CPU machine's cuInit failure is logged): what was written there is written back
  to stderr without the lines of STARTUP_NOISE. With --verbosity >= 1 nothing is set, held
  or dropped.
  """
  if logging.get_verbosity() >= VERBOSE_TENSORFLOW:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    return tf
  logging.get_absl_logger().addFilter(_DROP_MESSAGES)
  if "tensorflow" in sys.modules:
    return sys.modules["tensorflow"]
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  sys.stderr.flush()
  try:
    saved = os.dup(2)
  except OSError:  # no stderr to hold (closed)
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    return tf
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      import tensorflow as tf  # pylint: disable=import-outside-toplevel
      tf.config.list_physical_devices()
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      held.seek(0)
      kept = drop_startup_noise(held.read().decode("utf-8", "replace"))
      if kept:
        sys.stderr.write(kept)
        sys.stderr.flush()
  return tf


def import_tensorflow_while(work):
  """Runs work(stop) in a thread while this thread imports TensorFlow (`import_tensorflow`),
  so that work that needs no TensorFlow (word2vec's corpus pass: worker processes and file
  I/O) hides most of the 3-4 s import. Returns work's result, or raises its exception, once
  both are done.

  `stop` is a threading.Event that work polls: it is set when the import fails or is
  interrupted (Ctrl-C reaches this thread), and the exception is raised only after work
  ended, so that nothing runs on behind the caller's back (work may hold a run's lock).
  While the import holds stderr, what work logs is written when the import ends.
  """
  stop = threading.Event()
  outcome = {}

  def run():
    try:
      outcome["value"] = work(stop)
    except BaseException as e:  # pylint: disable=broad-except
      outcome["error"] = e  # raised in the caller's thread

  thread = threading.Thread(target=run, name="while-importing-tensorflow", daemon=True)
  thread.start()
  try:
    import_tensorflow()
    thread.join()
  except BaseException:
    stop.set()
    thread.join()
    raise
  if "error" in outcome:
    raise outcome["error"]
  return outcome["value"]
