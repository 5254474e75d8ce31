"""Embedding files: word2vec text and binary, TensorBoard projector, .npy.

Every writer goes through data/atomic.py: a reader never sees a half-written
file, and a failure mid-write leaves any previous file untouched.

word2vec formats (what Mikolov's word2vec writes and gensim's
``KeyedVectors.load_word2vec_format`` reads):

* header line ``"<count> <dim>\\n"``;
* text: one line per word, ``word v1 v2 ... vdim``, values written with 9
  significant digits, enough to round-trip float32 exactly;
* binary: per word ``word`` + a space + dim little-endian float32 values +
  ``"\\n"`` (the C tool's layout; gensim writes no newline, and both the
  gensim reader and `load_word2vec` accept either).

Rows are written in the order given (callers pass vocabulary id order, i.e.
descending frequency, which tools that take "the first N words" rely on).
Words must be non-empty and contain no whitespace: the formats are split on
spaces, so such words raise ValueError instead of producing a broken file.
"""
import os

import numpy as np

from tf_embeddings.data.atomic import atomic_save_npy, atomic_write
from tf_embeddings.data.errors import UserError

_PROJECTOR_CONFIG = """embeddings {{
  tensor_name: "{name}"
  tensor_path: "vectors.tsv"
  metadata_path: "metadata.tsv"
}}
"""


def _check(words, vectors, allow_spaces=False):
  """Validates and returns (list of words, 2-D float32 array)."""
  words = list(words)
  vectors = np.asarray(vectors, dtype=np.float32)
  if vectors.ndim != 2:
    raise ValueError(f"vectors must be 2-D [count, dim], got shape {vectors.shape}")
  if len(words) != vectors.shape[0]:
    raise ValueError(f"{len(words)} words but {vectors.shape[0]} vectors")
  for w in words:
    if not isinstance(w, str) or not w:
      raise ValueError(f"words must be non-empty strings, got {w!r}")
    if allow_spaces:
      if "\t" in w or "\n" in w or "\r" in w:
        raise ValueError(f"word {w!r} contains a tab or newline; it cannot go in a .tsv file")
    elif any(ch.isspace() for ch in w):
      raise ValueError(f"word {w!r} contains whitespace; the word2vec format cannot store it")
  if len(set(words)) != len(words):
    raise ValueError("duplicate words: a word2vec file maps each word to one vector")
  return words, vectors


def _format_row(word, row, fmt):
  return word + " " + fmt % tuple(row.tolist()) + "\n"


def save_word2vec_text(path, words, vectors):
  """Writes the word2vec text format (see module docstring)."""
  words, vectors = _check(words, vectors)
  fmt = " ".join(["%.9g"] * vectors.shape[1])
  with atomic_write(path) as f:
    f.write(f"{vectors.shape[0]} {vectors.shape[1]}\n")
    for word, row in zip(words, vectors):
      f.write(_format_row(word, row, fmt))


def save_word2vec_binary(path, words, vectors):
  """Writes the word2vec binary format (see module docstring)."""
  words, vectors = _check(words, vectors)
  little = vectors.astype("<f4", copy=False)
  with atomic_write(path, "wb") as f:
    f.write(f"{vectors.shape[0]} {vectors.shape[1]}\n".encode("utf-8"))
    for word, row in zip(words, little):
      f.write(word.encode("utf-8") + b" " + row.tobytes() + b"\n")


def load_word2vec(path, binary):
  """Reads a word2vec text or binary file (ours, gensim's or the C tool's).

  Args:
    path: the file.
    binary: True for the binary format.

  Returns:
    (list of words, float32 array [count, dim]) in file order.

  Raises:
    UserError: missing, truncated or malformed file.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise UserError(f"embedding file '{path}' does not exist: pass the path of a "
                    "word2vec .txt/.bin file")
  with open(path, "rb") as f:
    data = f.read()

  def bad(reason):
    kind = "binary" if binary else "text"
    return UserError(f"embedding file '{path}' is not a valid word2vec {kind} file ({reason}): "
                     f"check the file, or {'drop' if binary else 'pass'} --binary")

  end = data.find(b"\n")
  try:
    count, dim = (int(x) for x in data[:end if end >= 0 else len(data)].split())
  except ValueError:
    raise bad("the first line must be '<count> <dim>'") from None
  if count < 0 or dim <= 0:
    raise bad(f"header {count} {dim}")
  words = []
  vectors = np.empty((count, dim), dtype=np.float32)
  pos = end + 1
  if binary:
    width = 4 * dim
    for i in range(count):
      while data[pos:pos + 1] == b"\n":
        pos += 1
      space = data.find(b" ", pos)
      if space < 0 or space + 1 + width > len(data):
        raise bad(f"truncated at word {i + 1} of {count}")
      try:
        words.append(data[pos:space].decode("utf-8"))
      except UnicodeDecodeError:
        raise bad(f"word {i + 1} is not UTF-8") from None
      vectors[i] = np.frombuffer(data, dtype="<f4", count=dim, offset=space + 1)
      pos = space + 1 + width
  else:
    try:
      # Split on "\n" only: str.splitlines() would also split on \x1c, \x85, ...
      lines = data[pos:].decode("utf-8").split("\n")
    except UnicodeDecodeError as e:
      raise bad(f"not UTF-8: {e.reason}") from None
    lines = [line for line in lines if line.strip()]
    if len(lines) < count:
      raise bad(f"header says {count} words, found {len(lines)}")
    for i, line in enumerate(lines[:count]):
      parts = line.rstrip().split(" ")
      if len(parts) != dim + 1:
        raise bad(f"line {i + 2} has {len(parts) - 1} values, expected {dim}")
      words.append(parts[0])
      try:
        vectors[i] = np.array(parts[1:], dtype=np.float32)
      except ValueError:
        raise bad(f"line {i + 2} has a value that is not a number") from None
  return words, vectors


def save_projector(directory, words, vectors, counts=None, tensor_name="word_embedding",
                   columns=None):
  """Writes TensorBoard projector files into `directory`.

  Files: vectors.tsv (one tab-separated row per word), metadata.tsv (a
  ``word<TAB>count`` header and rows when `counts` is given, the header and rows of
  `columns` when given, else one word per line without header, as the projector
  expects for a single column) and projector_config.pbtxt pointing at both with paths
  relative to `directory`. TensorBoard finds them when `directory` is a run (holds
  event files) under ``--logdir``.

  Args:
    columns: optional {header: [value per word]} (e.g. item_id, title) for metadata.tsv;
      tabs and newlines in values become spaces.

  Returns:
    dict with the paths written: "vectors", "metadata", "config".
  """
  words, vectors = _check(words, vectors, allow_spaces=True)
  if counts is not None:
    counts = np.asarray(counts).tolist()
    if len(counts) != len(words):
      raise ValueError(f"{len(words)} words but {len(counts)} counts")
  directory = os.fspath(directory)
  paths = {"vectors": os.path.join(directory, "vectors.tsv"),
           "metadata": os.path.join(directory, "metadata.tsv"),
           "config": os.path.join(directory, "projector_config.pbtxt")}
  fmt = "\t".join(["%.9g"] * vectors.shape[1]) + "\n"
  with atomic_write(paths["vectors"]) as f:
    for row in vectors:
      f.write(fmt % tuple(row.tolist()))
  with atomic_write(paths["metadata"]) as f:
    if columns is not None:
      clean = lambda v: " ".join(str(v).replace("\t", " ").split("\n"))
      f.write("\t".join(columns) + "\n")
      for row in zip(*columns.values()):
        f.write("\t".join(clean(v) for v in row) + "\n")
    elif counts is None:
      f.writelines(w + "\n" for w in words)
    else:
      f.write("word\tcount\n")
      f.writelines(f"{w}\t{c}\n" for w, c in zip(words, counts))
  with atomic_write(paths["config"]) as f:
    f.write(_PROJECTOR_CONFIG.format(name=tensor_name))
  return paths


def _npy_paths(dir_or_prefix):
  dir_or_prefix = os.fspath(dir_or_prefix)
  if os.path.isdir(dir_or_prefix) or dir_or_prefix.endswith(os.sep):
    return (os.path.join(dir_or_prefix, "vectors.npy"),
            os.path.join(dir_or_prefix, "vocab.txt"))
  return dir_or_prefix + ".vectors.npy", dir_or_prefix + ".vocab.txt"


def save_npy(dir_or_prefix, words, vectors):
  """Writes vectors.npy (float32 [count, dim]) and vocab.txt (one word per line).

  Args:
    dir_or_prefix: an existing directory (or a path ending in "/") -> files
      DIR/vectors.npy and DIR/vocab.txt; otherwise a prefix P -> P.vectors.npy
      and P.vocab.txt.
    words: words in row order.
    vectors: [count, dim] array.

  Returns:
    (vectors path, vocab path).
  """
  words, vectors = _check(words, vectors, allow_spaces=True)
  vec_path, vocab_path = _npy_paths(dir_or_prefix)
  atomic_save_npy(vec_path, vectors)
  with atomic_write(vocab_path) as f:
    f.writelines(w + "\n" for w in words)
  return vec_path, vocab_path


def load_npy(dir_or_prefix):
  """Reads what `save_npy` wrote. Returns (list of words, float32 array)."""
  vec_path, vocab_path = _npy_paths(dir_or_prefix)
  for p in (vec_path, vocab_path):
    if not os.path.isfile(p):
      raise UserError(f"embedding file '{p}' does not exist: pass the directory or prefix "
                      "given to save_npy")
  vectors = np.load(vec_path, allow_pickle=False)
  with open(vocab_path, encoding="utf-8", newline="\n") as f:
    words = [line.rstrip("\n") for line in f]
  if len(words) != vectors.shape[0]:
    raise UserError(f"{vocab_path} has {len(words)} words but {vec_path} has "
                    f"{vectors.shape[0]} rows: export them again")
  return words, vectors
