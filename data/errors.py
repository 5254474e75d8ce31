"""The one exception type for mistakes a user can fix."""


class UserError(Exception):
  """A problem with the user's input, flags or files.

  The message is one line that names the problem and the fix, e.g.
  ``corpus file 'x.txt' does not exist: pass --corpus=<file, directory or text8>``.
  The apps print it as ``error: <message>`` and exit with status 2, no traceback.
  """
