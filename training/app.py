"""Runs an absl app so that a user's mistake ends in one line, not a traceback."""
import sys

from absl import app

from data.errors import UserError


def run(main):
  """Like `absl.app.run(main)`, printing `error: <message>` and exiting 2 on UserError."""

  def guarded(argv):
    try:
      return main(argv)
    except UserError as e:
      sys.stderr.write(f"error: {e}\n")
      sys.stderr.flush()
      sys.exit(2)
    except KeyboardInterrupt:
      sys.stderr.write("interrupted: resume with the same command (checkpoints are kept)\n")
      sys.exit(130)

  app.run(guarded)
