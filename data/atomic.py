"""Write files so that a reader never sees a half-written one."""
import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_write(path, mode="w", encoding="utf-8"):
  """Opens a temporary file beside `path`; renames it onto `path` on success.

  Args:
    path: final file path.
    mode: "w" (text) or "wb" (binary).
    encoding: text encoding for text mode.

  Yields:
    The open temporary file object. If the body raises, the temporary file is
    removed and `path` is left untouched.
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                             suffix=".tmp", dir=directory)
  try:
    if "b" in mode:
      f = os.fdopen(fd, mode)
    else:
      f = os.fdopen(fd, mode, encoding=encoding, newline="\n")
    with f:
      yield f
    # mkstemp creates 0600 files; give the result the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def atomic_save_npy(path, array):
  """Saves a numpy array to `path` (.npy) atomically."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  with atomic_write(path, "wb") as f:
    np.save(f, array)
