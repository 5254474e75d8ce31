"""Runs an absl app so that a user's mistake ends in one line, not a traceback."""
import os
import sys

from absl import app
from absl import flags

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
      sys.stderr.write("interrupted: resume with the same command (checkpoints are kept)\n")
      sys.exit(130)

  app.run(guarded, flags_parser=lambda argv: parse_flags(argv, usage, flag_module))
