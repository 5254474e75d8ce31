"""Runs an absl app so that a user's mistake ends in one line, not a traceback."""
import sys

from absl import app
from absl import flags

from data.errors import UserError


def _fail(message):
  sys.stderr.write(f"error: {message}\n")
  sys.stderr.flush()
  sys.exit(2)


def parse_flags(argv):
  """absl's flag parsing, with a flag error as one `error: ...` line and exit 2 (absl's own
  prints `FATAL Flags parsing error` and exits 1)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(" ".join(str(e).split()) + " (--helpfull lists the flags)")


def run(main):
  """Like `absl.app.run(main)`, printing `error: <message>` and exiting 2 on UserError."""

  def guarded(argv):
    try:
      return main(argv)
    except UserError as e:
      _fail(e)
    except KeyboardInterrupt:
      sys.stderr.write("interrupted: resume with the same command (checkpoints are kept)\n")
      sys.exit(130)

  app.run(guarded, flags_parser=parse_flags)
