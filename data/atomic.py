"""Write files and outputs so that a reader never sees a half-written one.

* `atomic_write`: one file, written under a hidden temporary name beside it and renamed.
* `replace_output`: an export (a file or a whole directory) built beside its path and
  renamed over it; an existing output is replaced only when the caller says so, and a
  directory is swapped in one step (Linux renameat2 RENAME_EXCHANGE; elsewhere the old one
  is renamed aside and removed only after the new one is in place).

Temporary names are `.<name>.<pid>.<random>.tmp` (and `.old`): a later successful write of
the same path removes those left by processes that no longer run (a kill -9).
"""
import contextlib
import ctypes
import ctypes.util
import os
import re
import shutil
import tempfile

from tf_embeddings.data.errors import UserError


def _temp_prefix(path):
  return "." + os.path.basename(path) + f".{os.getpid()}."


def _pid_alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except (PermissionError, OverflowError):
    return True
  return True


def remove_stale_temporaries(path):
  """Removes `.<name>.<pid>.*.tmp|.old` beside `path` whose process no longer runs."""
  directory = os.path.dirname(os.path.abspath(path))
  pattern = re.compile(r"\." + re.escape(os.path.basename(path)) +
                       r"\.(\d+)\.[^/]*\.(tmp|old)$")
  try:
    names = os.listdir(directory)
  except OSError:
    return
  for name in names:
    match = pattern.fullmatch(name)
    if not match or _pid_alive(int(match.group(1))):
      continue
    stale = os.path.join(directory, name)
    if os.path.isdir(stale) and not os.path.islink(stale):
      shutil.rmtree(stale, ignore_errors=True)
    else:
      with contextlib.suppress(OSError):
        os.remove(stale)


def _set_default_permissions(path, directory=False):
  # mkstemp/mkdtemp create 0600/0700; give the result the permissions a plain open() would.
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(path, (0o777 if directory else 0o666) & ~umask)


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
  fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=directory)
  try:
    if "b" in mode:
      f = os.fdopen(fd, mode)
    else:
      f = os.fdopen(fd, mode, encoding=encoding, newline="\n")
    with f:
      yield f
    _set_default_permissions(tmp)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise
  remove_stale_temporaries(path)


def atomic_save_npy(path, array):
  """Saves a numpy array to `path` (.npy) atomically."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  with atomic_write(path, "wb") as f:
    np.save(f, array)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a, b):
  """Atomically swaps paths a and b (Linux renameat2). False where unsupported."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    renameat2 = libc.renameat2
  except (OSError, AttributeError):
    return False
  renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                        ctypes.c_uint]
  if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
    return True
  return False


def _inside(a, b):
  """True if path a is b or lies under b."""
  a, b = os.path.realpath(a), os.path.realpath(b)
  return a == b or a.startswith(b.rstrip(os.sep) + os.sep)


def check_output(path, overwrite, directory, model_dir=None, owned_names=None):
  """UserError unless `path` may receive an export.

  Args:
    path: the --output.
    overwrite: --overwrite: an existing output may be replaced (as a whole).
    directory: the export is a directory (else one file).
    model_dir: the run exported; the output may not be it, be inside it or contain it.
    owned_names: for a directory export, the names it writes: an existing directory with
      anything else in it is not an earlier export and is never replaced.
  """
  path = os.fspath(path)
  if model_dir and (_inside(path, model_dir) or _inside(model_dir, path)):
    raise UserError(f"--output={path} is, contains or is inside the run directory "
                    f"--model_dir={model_dir}: export somewhere else")
  if not os.path.lexists(path):
    parent = os.path.dirname(os.path.abspath(path))
    probe = parent
    while not os.path.exists(probe):
      probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
      raise UserError(f"--output={path}: cannot write in {probe}")
    return
  if not overwrite:
    raise UserError(f"--output={path} exists; pass --overwrite to replace it")
  if os.path.isdir(path) != directory:
    kind = "a directory" if os.path.isdir(path) else "a file"
    raise UserError(f"--output={path} is {kind}, and this export writes "
                    f"{'a directory' if directory else 'a file'}: pick another --output")
  if directory and owned_names is not None:
    foreign = sorted(set(os.listdir(path)) - set(owned_names))
    if foreign:
      raise UserError(f"--output={path} holds files this export does not write "
                      f"({', '.join(foreign[:5])}): it is not replaced; pick another --output")


def replace_output(path, build, directory, overwrite=False, model_dir=None,
                   owned_names=None):
  """Builds an export beside `path` with `build(tmp_path)` and renames it onto `path`.

  Args:
    path: the output file or directory.
    build: writes the export at the path it is given (for a directory: into it).
    directory: the export is a directory.
    overwrite, model_dir, owned_names: see `check_output`.

  A reader (or a kill -9 at any point) sees the old output or the new one, never a mix;
  nothing is deleted unless the new output is in place.
  """
  path = os.fspath(path).rstrip(os.sep) or os.sep
  check_output(path, overwrite, directory, model_dir, owned_names)
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  if directory:
    tmp = tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=parent)
    _set_default_permissions(tmp, directory=True)
  else:
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=parent)
    os.close(fd)
    _set_default_permissions(tmp)
  try:
    build(tmp)
    if not os.path.lexists(path) or not directory:
      os.replace(tmp, path)  # one file, or a directory where there was none: atomic
    elif _exchange(tmp, path):
      shutil.rmtree(tmp)  # now the old output
    else:
      aside = tempfile.mktemp(prefix=_temp_prefix(path), suffix=".old", dir=parent)
      os.rename(path, aside)
      os.rename(tmp, path)
      shutil.rmtree(aside)
  except BaseException:
    if os.path.isdir(tmp) and not os.path.islink(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
    else:
      with contextlib.suppress(OSError):
        os.remove(tmp)
    raise
  remove_stale_temporaries(path)
  return path
