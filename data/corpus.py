"""Text corpora read as a stream: the bundled default, text8, files, directories.

`resolve_corpus(spec)` turns the ``--corpus`` value into a `Corpus`:

* None or "" -> the bundled State of the Union addresses (data/corpora/sotu.txt.gz,
  one address per line);
* "text8" -> Matt Mahoney's text8 (first 10^8 bytes of cleaned English Wikipedia),
  downloaded once into the cache by data/fetch.py and read straight from the zip;
  to read a local file that happens to be called ``text8``, pass ``./text8``;
* a path to a file (plain text or gzip, detected from its first bytes);
* several paths separated by commas;
* a directory: every regular file under it, recursively, in sorted path order,
  skipping hidden files and hidden directories.

Nothing is read into memory whole. Files are read in binary blocks and cut into
pieces at line ends; a line longer than a block (text8 is one 100 MB line) is cut
at the last ASCII whitespace byte of the block, so no token is split. Whitespace
bytes never occur inside a multi-byte UTF-8 sequence, so every piece is a whole
UTF-8 sequence: a character that straddles a block boundary is carried into the
next piece and decodes cleanly. (This is why no incremental decoder is needed:
pieces are only decoded once complete.) Bytes that are not valid UTF-8 are
replaced with U+FFFD, one per invalid byte, counted in `Corpus.replaced_bytes` / `Corpus.bad_lines`,
and reported once per corpus as a warning; they are never fatal.
"""
import gzip
import io
import os
import re
import zipfile
import zlib

from absl import logging

from tf_embeddings.data import fetch as fetch_lib
from tf_embeddings.data import tokenizer as tokenizer_lib
from tf_embeddings.data.errors import UserError

TEXT8_URL = "http://mattmahoney.net/dc/text8.zip"
# sha256 of text8.zip (31,344,016 bytes). Taken from two independent public
# projects that pin it (found by searching public code for TEXT8_SHA256); both
# agree. The file has not changed since 2006.
TEXT8_SHA256 = "a6640522afe85d1963ad56c05b0ede0a0c000dddc9671758a6cc09b7a38e5232"

DEFAULT_CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpora",
                              "sotu.txt.gz")
BLOCK_SIZE = 1 << 20
_WHITESPACE = b" \t\n\r\x0b\x0c"
_SURROGATES = re.compile("[\udc80-\udcff]")
_FIX = "pass --corpus=<file, directory, comma-separated files, or text8>"


class _Source:
  """One readable input: a file on disk, or one member of a zip archive."""

  def __init__(self, path, member=None, label=None):
    self.path = path
    self.member = member
    self.label = label or (f"{path}:{member}" if member else path)

  def size(self):
    if self.member is not None:
      with zipfile.ZipFile(self.path) as z:
        return z.getinfo(self.member).file_size
    return os.path.getsize(self.path)

  def open(self):
    """Returns a binary file object over the (decompressed) contents."""
    if self.member is not None:
      archive = zipfile.ZipFile(self.path)
      return _ClosingMember(archive, archive.open(self.member))
    f = open(self.path, "rb")
    if f.peek(2)[:2] == b"\x1f\x8b":
      f.close()
      return gzip.open(self.path, "rb")
    return f


class _ClosingMember(io.RawIOBase):
  """A zip member whose close() also closes its archive."""

  def __init__(self, archive, member):
    super().__init__()
    self._archive = archive
    self._member = member

  def read(self, n=-1):
    return self._member.read(n)

  def readable(self):
    return True

  def close(self):
    self._member.close()
    self._archive.close()
    super().close()


class Corpus:
  """A streamed text corpus: one or more files, read in order.

  Attributes:
    name: short human name ("sotu (bundled)", "text8", a path, ...).
    sources: the files read, in order.
    tokenizer: tokenizer mode, one of data.tokenizer.TOKENIZERS.
    block_size: bytes read at a time.
    replaced_bytes: invalid UTF-8 bytes replaced with U+FFFD during the latest
      pass over the corpus (reset when a pass starts).
    bad_lines: number of lines (or pieces of long lines) that had such bytes in
      the latest pass.
  """

  def __init__(self, name, sources, tokenizer="text8", block_size=BLOCK_SIZE):
    if tokenizer not in tokenizer_lib.TOKENIZERS:
      raise ValueError(f"unknown tokenizer {tokenizer!r}: choose one of "
                       f"{', '.join(tokenizer_lib.TOKENIZERS)}")
    self.name = name
    self.sources = list(sources)
    self.tokenizer = tokenizer
    self.block_size = int(block_size)
    self.replaced_bytes = 0
    self.bad_lines = 0
    self._warned = False

  @property
  def paths(self):
    return [s.label for s in self.sources]

  def total_bytes(self):
    """Uncompressed size where cheap to know (zip, plain files); gzip: on-disk size."""
    return sum(s.size() for s in self.sources)

  def describe(self):
    """One line for logs, e.g. ``text8 (1 file, 100.0 MB, tokenizer=text8)``."""
    n = len(self.sources)
    return (f"{self.name} ({n} file{'s' if n != 1 else ''}, "
            f"{self.total_bytes() / 1e6:.1f} MB, tokenizer={self.tokenizer})")

  def iter_lines(self):
    """Yields decoded text pieces in corpus order, each ending at a line end.

    Lines longer than `block_size` bytes are yielded in several pieces cut at
    whitespace, so a piece never ends inside a token. Line terminators are
    stripped. Invalid UTF-8 bytes become U+FFFD (see the class docstring).
    """
    return self._iter_decoded(whole=False)

  def iter_texts(self):
    """Yields decoded texts in corpus order: the complete lines of each block read (about
    `block_size` bytes, joined by their own line ends, "\\r" kept), or iter_lines' pieces
    of a long line. A tokenizer treats "\\r" and "\\n" as any separator, so these are
    iter_lines' tokens, decoded a block at a time (data/tokenize_pool.py: a fifth of the
    pass's work in its own process went to one decode per line). Invalid UTF-8 as in
    iter_lines, counted and reported line by line."""
    return self._iter_decoded(whole=True)

  def _iter_decoded(self, whole):
    self.replaced_bytes = 0
    self.bad_lines = 0
    for source in self.sources:
      line_no = 0
      for raw, lines in self._iter_raw_pieces(source, whole):
        try:
          text = raw.decode("utf-8")
        except UnicodeDecodeError:
          text = "\n".join(self._decode_line(line, source, line_no + i + 1)
                           for i, line in enumerate(raw.split(b"\n") if lines > 1 else [raw]))
        line_no += lines
        yield text

  def _decode_line(self, raw, source, line_no):
    """One line (or piece) decoded, its invalid UTF-8 bytes replaced and counted."""
    try:
      return raw.decode("utf-8")
    except UnicodeDecodeError:
      pass
    text = raw.decode("utf-8", "surrogateescape")
    bad = len(_SURROGATES.findall(text))
    text = _SURROGATES.sub("\ufffd", text)
    self.replaced_bytes += bad
    self.bad_lines += 1
    if not self._warned:
      self._warned = True
      logging.warning(
          "corpus %s: %s line %d is not valid UTF-8; invalid bytes are replaced "
          "with U+FFFD (counted in replaced_bytes, reported once)",
          self.name, source.label, line_no)
    return text

  def _iter_raw_pieces(self, source, whole=False):
    """Yields (piece, lines): byte pieces of `source` split at newlines (one line each, its
    "\\r\\n" or "\\n" stripped), or at whitespace for long lines (lines = 1). With
    `whole`, the complete lines of each block read come as one piece (their inner line ends
    kept, the last "\\n" stripped) and `lines` counts them."""
    block = self.block_size
    try:
      f = source.open()
    except OSError as e:
      raise UserError(f"cannot read corpus file '{source.label}' ({e}): {_FIX}") from None
    with f:
      pending = b""
      while True:
        try:
          data = f.read(block)
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
          raise UserError(f"corpus file '{source.label}' is damaged ({e}): "
                          "replace it or remove it from --corpus") from None
        if not data:
          break
        buf = pending + data if pending else data
        if whole:
          end = buf.rfind(b"\n")
          pending = buf[end + 1:]
          if end >= 0:
            head = buf[:end]
            yield head.rstrip(b"\r"), head.count(b"\n") + 1
        else:
          lines = buf.split(b"\n")
          pending = lines.pop()
          for line in lines:
            yield line.rstrip(b"\r"), 1
        if len(pending) >= block:
          cut = max(pending.rfind(c, 0, len(pending)) for c in _WHITESPACE)
          if cut < 0:
            if len(pending) < 16 * block:
              continue  # No whitespace yet: keep one giant token together a bit longer.
            cut = _utf8_boundary(pending, len(pending) - 1)
            head, pending = pending[:cut], pending[cut:]
          else:
            head, pending = pending[:cut], pending[cut + 1:]
          yield head, 1
      if pending:
        yield pending.rstrip(b"\r"), 1

  def iter_tokens(self):
    """Yields tokens (str) one at a time, in corpus order."""
    for line in self.iter_lines():
      yield from tokenizer_lib.tokenize(line, self.tokenizer)

  def iter_token_chunks(self, chunk_tokens=1_000_000):
    """Yields lists of exactly `chunk_tokens` tokens (the last may be shorter).

    Args:
      chunk_tokens: tokens per chunk, > 0.

    Yields:
      list of str, in corpus order; never empty.

    Raises:
      UserError: the corpus has no tokens at all.
    """
    if chunk_tokens <= 0:
      raise ValueError(f"chunk_tokens must be positive, got {chunk_tokens}")
    mode = self.tokenizer
    buf = []
    seen = False
    for line in self.iter_lines():
      buf.extend(tokenizer_lib.tokenize(line, mode))
      if len(buf) >= chunk_tokens:
        seen = True
        start = 0
        while len(buf) - start >= chunk_tokens:
          yield buf[start:start + chunk_tokens]
          start += chunk_tokens
        buf = buf[start:]
    if buf:
      seen = True
      yield buf
    if not seen:
      raise self._empty_error()

  def check_not_empty(self):
    """Raises UserError unless the corpus has at least one token (reads up to the first)."""
    for line in self.iter_lines():
      if tokenizer_lib.tokenize(line, self.tokenizer):
        return
    raise self._empty_error()

  def _empty_error(self):
    return UserError(
        f"corpus {self.name} has no tokens for the {self.tokenizer} tokenizer "
        f"(empty, or only punctuation/digits): {_FIX}, or try --tokenizer=whitespace")

  def __repr__(self):
    return f"Corpus({self.describe()})"


def _utf8_boundary(data, cut):
  """Moves `cut` back so data[:cut] does not end inside a UTF-8 sequence."""
  while cut > 0 and (data[cut] & 0xC0) == 0x80:
    cut -= 1
  return cut or len(data)


def _visible_files(directory):
  """Regular files under `directory`, recursively, sorted, skipping hidden ones."""
  found = []
  for root, dirs, files in os.walk(directory):
    dirs[:] = [d for d in dirs if not d.startswith(".")]
    for name in files:
      path = os.path.join(root, name)
      if not name.startswith(".") and os.path.isfile(path):
        found.append(path)
  return sorted(found)


def _text8_source():
  path = fetch_lib.fetch("text8", TEXT8_URL, TEXT8_SHA256, filename="text8.zip")
  try:
    with zipfile.ZipFile(path) as z:
      members = [i.filename for i in z.infolist() if not i.is_dir()]
  except zipfile.BadZipFile:
    raise UserError(f"text8 archive {path} is not a zip file: delete it so it is "
                    "downloaded again") from None
  if len(members) != 1:
    raise UserError(f"text8 archive {path} should hold one file, found {len(members)}: "
                    "delete it so it is downloaded again")
  return _Source(path, member=members[0], label="text8")


def resolve_corpus(spec, tokenizer="text8", block_size=BLOCK_SIZE):
  """Builds the Corpus named by a ``--corpus`` value.

  Args:
    spec: None/"" (bundled default), "text8", a file, a directory, or
      comma-separated files/directories.
    tokenizer: one of data.tokenizer.TOKENIZERS.
    block_size: bytes read at a time (tests use tiny blocks).

  Returns:
    A Corpus with at least one token.

  Raises:
    UserError: a path does not exist, a directory has no files, the corpus has
      no tokens, or text8 cannot be downloaded.
  """
  if not spec:
    if not os.path.exists(DEFAULT_CORPUS):
      raise UserError(f"bundled corpus {DEFAULT_CORPUS} is missing: reinstall the "
                      f"package or {_FIX}")
    corpus = Corpus("sotu (bundled State of the Union addresses)",
                    [_Source(DEFAULT_CORPUS)], tokenizer, block_size)
  elif spec == "text8":
    if os.path.exists("text8"):
      logging.info("--corpus=text8 means the downloaded dataset; pass ./text8 to read the "
                   "local file named text8 instead")
    corpus = Corpus("text8", [_text8_source()], tokenizer, block_size)
  else:
    items = [spec] if os.path.exists(spec) else [s.strip() for s in spec.split(",")]
    sources = []
    for item in items:
      if not item:
        continue
      if os.path.isdir(item):
        files = _visible_files(item)
        if not files:
          raise UserError(f"corpus directory '{item}' contains no (non-hidden) files: {_FIX}")
        sources.extend(_Source(p) for p in files)
      elif os.path.isfile(item):
        sources.append(_Source(item))
      elif os.path.exists(item):
        raise UserError(f"corpus path '{item}' is not a regular file or directory: {_FIX}")
      else:
        raise UserError(f"corpus file '{item}' does not exist: {_FIX}")
    if not sources:
      raise UserError(f"--corpus={spec!r} names no files: {_FIX}")
    corpus = Corpus(spec, sources, tokenizer, block_size)
  corpus.check_not_empty()
  logging.info("corpus: %s", corpus.describe())
  return corpus
