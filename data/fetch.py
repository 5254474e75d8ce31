"""Download public files once: real URL, checksum, cache, clear offline error."""
import hashlib
import os
import shutil
import urllib.error
import urllib.request

from absl import logging

from tf_embeddings.data.errors import UserError


def cache_dir():
  """Where fetched datasets live: $EMBEDDINGS_CACHE or ~/.cache/tf-embeddings."""
  return os.environ.get("EMBEDDINGS_CACHE",
                        os.path.join(os.path.expanduser("~"), ".cache", "tf-embeddings"))


def sha256_of(path, block=1 << 20):
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while True:
      chunk = f.read(block)
      if not chunk:
        return h.hexdigest()
      h.update(chunk)


def fetch(name, url, sha256, filename=None, mirrors=(), timeout=60):
  """Returns the local path of a file, downloading it into the cache if needed.

  Args:
    name: human name for messages ("text8").
    url: the public URL.
    sha256: expected hex digest of the file; a mismatch is an error.
    filename: cache file name (default: last URL component).
    mirrors: extra local paths or callables returning a local path (or None),
      tried before the network, e.g. a file inside an installed wheel.
    timeout: network timeout in seconds.

  Raises:
    UserError: offline, download failed, or checksum mismatch.
  """
  filename = filename or url.rsplit("/", 1)[-1]
  target = os.path.join(cache_dir(), filename)
  if os.path.exists(target):
    if sha256 is None or sha256_of(target) == sha256:
      return target
    logging.warning("cached %s has a wrong checksum; fetching it again", target)
  os.makedirs(cache_dir(), exist_ok=True)
  for mirror in mirrors:
    local = mirror() if callable(mirror) else mirror
    if local and os.path.exists(local) and (sha256 is None or sha256_of(local) == sha256):
      logging.info("%s: using local mirror %s", name, local)
      tmp = target + ".part"
      shutil.copyfile(local, tmp)
      os.replace(tmp, target)
      return target
  tmp = target + ".part"
  logging.info("%s: downloading %s", name, url)
  try:
    with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as out:
      shutil.copyfileobj(r, out, 1 << 20)
  except (urllib.error.URLError, OSError) as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise UserError(
        f"cannot download {name} from {url} ({getattr(e, 'reason', e)}): this machine "
        f"looks offline; download it elsewhere and put it at {target}") from None
  got = sha256_of(tmp)
  if sha256 is not None and got != sha256:
    os.remove(tmp)
    raise UserError(f"{name} from {url} has sha256 {got}, expected {sha256}: the download is "
                    "corrupt or the file changed upstream; try again")
  os.replace(tmp, target)
  return target
