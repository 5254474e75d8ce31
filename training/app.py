"""Runs an absl app so that a user's mistake ends in one line, not a traceback."""
import sys

from absl import app
from absl import flags

from data.errors import UserError


def _fail(message):
  sys.stderr.write(f"error: {message}\n")
  sys.stderr.flush()
  sys.exit(2)


HELP_ARGS = ("-h", "-?", "--help", "--helpshort")


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
