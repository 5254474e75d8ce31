"""The corpus pass of the vocabulary, tokenised by worker processes.

The pass that builds a vocabulary (word2vec/inputs.py prepare_data) is mostly regex
tokenisation and dictionary lookups, pure Python under one GIL: 3.8M tokens/s on one core.
`encoded_batches` splits it: this process reads and decodes the corpus (Corpus.iter_texts, a
block of lines at a time, which keeps the UTF-8 accounting) and sends batches of lines to
`workers` child processes (`python -m tf_embeddings.data.tokenize_pool`, nothing but this
module, numpy and the tokenizer imported: no TensorFlow), each of which tokenises its batch
and numbers the batch's distinct words in order of first appearance; back come those words
and the batch's tokens as indices into them. Batches are handed out round-robin and read
back in the same order, so `VocabularyBuilder.add_distinct` sees the words in corpus order:
the provisional ids, the counts and the vocabulary are exactly those of the one-process pass
(tested), whatever the number of workers. With workers <= 1 the same batch function runs in
this process.

Protocol, over the children's stdin / stdout: a request is an 8-byte little-endian length
and that many bytes of UTF-8 text (lines joined by "\n"); length 0 ends the worker. A reply
is two 8-byte lengths (bytes of the "\n"-joined distinct words, number of tokens), the words,
and the tokens' int32 indices. A token never contains whitespace (data/tokenizer.py), so
"\n" separates both lines and words. Each child has a feeding thread, so a child blocked on
writing its reply never blocks this process's writes to another one, and a thread reading
its stderr, whose last lines a failure quotes (the pass may run while TensorFlow's import
holds this process's stderr: training/app.py import_tensorflow_while).
"""
import collections
import itertools
import os
import queue
import struct
import subprocess
import sys
import threading

import numpy as np

from tf_embeddings.data import tokenizer as tokenizer_lib

# Characters of text per batch (about 0.7M tokens of English).
BATCH_CHARS = 4 << 20
# Corpora smaller than this are tokenised in this process (a worker costs ~0.1 s to start).
MIN_PARALLEL_BYTES = 32 << 20
# The same while TensorFlow is imported beside the pass (training/app.py
# import_tensorflow_while): tokenising in this process would hold the GIL the import needs.
MIN_PARALLEL_BYTES_BESIDE_IMPORT = 4 << 20
_HEADER = struct.Struct("<Q")
_REPLY = struct.Struct("<QQ")
# Lines of a worker's stderr quoted when it fails.
STDERR_LINES = 20


def default_workers(corpus, min_bytes=None):
  """Worker processes for `corpus`: none below `min_bytes` (default MIN_PARALLEL_BYTES) of
  Corpus.total_bytes() (a gzip source counts its compressed size), else one per available
  core, at most 4."""
  if corpus.total_bytes() < (MIN_PARALLEL_BYTES if min_bytes is None else min_bytes):
    return 0
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    cores = os.cpu_count() or 1
  return min(cores, 4) if cores > 1 else 0


def tokenize_batch(text, mode):
  """(distinct words in order of first appearance, int32 index of each token among them)
  of the tokens of `text` (lines joined by "\\n"): what a worker replies, decoded."""
  joined, local = _tokenize_batch_bytes(text, mode)
  return (joined.decode("utf-8").split("\n") if joined else []), local


def _tokenize_batch_bytes(text, mode):
  """tokenize_batch's words as their UTF-8 bytes joined by "\\n" (a worker's reply)."""
  # One call for the whole batch: the tokenizers treat "\n" as any separator, and lower(),
  # accent folding and NFKD never act across it, so this is the lines' tokens in order.
  if mode == "text8":
    tokens = tokenizer_lib.text8_bytes(text)  # ASCII bytes: joined as they are
  else:
    tokens = tokenizer_lib.tokenize(text, mode)
  numbered = collections.defaultdict(itertools.count().__next__)
  local = np.fromiter(map(numbered.__getitem__, tokens), dtype=np.int32, count=len(tokens))
  if mode == "text8":
    return b"\n".join(numbered), local
  return "\n".join(numbered).encode("utf-8"), local


def _batches(corpus):
  """The corpus's lines joined into texts of about BATCH_CHARS characters."""
  lines, size = [], 0
  for text in corpus.iter_texts():
    lines.append(text)
    size += len(text) + 1
    if size >= BATCH_CHARS:
      yield "\n".join(lines)
      lines, size = [], 0
  if lines:
    yield "\n".join(lines)


def encoded_batches(corpus, workers=None, min_bytes=None):
  """Yields (words, local) of each batch of `corpus`, in corpus order (`tokenize_batch`),
  skipping batches without tokens.

  Args:
    corpus: a data.corpus.Corpus.
    workers: child processes; None = `default_workers(corpus, min_bytes)`; 0 or 1 = in
      this process.

  Raises:
    UserError: the corpus has no tokens (as Corpus.iter_token_chunks).
    RuntimeError: a worker process failed (the message quotes its last stderr lines).
  """
  if workers is None:
    workers = default_workers(corpus, min_bytes)
  seen = False
  if workers <= 1:
    results = (tokenize_batch(text, corpus.tokenizer) for text in _batches(corpus))
  else:
    results = _pool_map(_batches(corpus), workers, corpus.tokenizer)
  for words, local in results:
    if local.shape[0]:
      seen = True
      yield words, local
  if not seen:
    raise corpus._empty_error()  # pylint: disable=protected-access


def worker_command(mode):
  """The command line of one worker process."""
  return [sys.executable, "-m", __name__, mode]


def _pool_map(texts, workers, mode):
  """Starts `workers` tokenising children, sends them `texts` round-robin and yields
  their replies in order; stops the children when done (also on error or close)."""
  procs, feeds, threads = [], [], []
  try:
    for _ in range(workers):
      proc = subprocess.Popen(worker_command(mode), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
      procs.append(proc)
      proc.stderr_tail = collections.deque(maxlen=STDERR_LINES)
      thread = threading.Thread(target=_drain, args=(proc.stderr, proc.stderr_tail),
                                daemon=True, name="tokenize-stderr")
      thread.start()
      proc.stderr_thread = thread
      threads.append(thread)
      feed = queue.Queue(maxsize=2)  # at most 2 batches waiting per worker
      feeds.append(feed)
      thread = threading.Thread(target=_feed, args=(feed, proc.stdin), daemon=True,
                                name="tokenize-feed")
      thread.start()
      threads.append(thread)
    sent = collections.deque()  # worker index of each batch sent and not yet read back
    for i, text in enumerate(texts):
      k = i % workers
      feeds[k].put(text.encode("utf-8"))
      sent.append(k)
      # Keep every worker busy: read back once each has two batches out.
      while len(sent) > 2 * workers:
        yield _read_reply(procs[sent.popleft()])
    while sent:
      yield _read_reply(procs[sent.popleft()])
  finally:
    for feed in feeds:
      try:
        feed.put_nowait(None)
      except queue.Full:
        pass
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
      proc.wait()
      proc.stdout.close()
    for thread in threads:  # the stderr readers end with their process
      thread.join(timeout=5)


def _feed(feed, stdin):
  """Writes each queued batch to a worker's stdin; None (or a dead worker) stops."""
  try:
    while True:
      data = feed.get()
      if data is None:
        stdin.write(_HEADER.pack(0))
        return
      stdin.write(_HEADER.pack(len(data)))
      stdin.write(data)
      stdin.flush()
  except (BrokenPipeError, OSError, ValueError):
    pass
  finally:
    try:
      stdin.close()
    except (BrokenPipeError, OSError):
      pass


def _drain(stderr, tail):
  """Reads a worker's stderr to its end, keeping the last lines in `tail`."""
  try:
    for line in stderr:
      tail.append(line.decode("utf-8", "replace").rstrip())
  except (OSError, ValueError):
    pass
  finally:
    stderr.close()


def _read_exact(stream, n):
  data = stream.read(n)
  if len(data) != n:
    raise EOFError
  return data


def _read_reply(proc):
  try:
    words_bytes, count = _REPLY.unpack(_read_exact(proc.stdout, _REPLY.size))
    words = _read_exact(proc.stdout, words_bytes).decode("utf-8")
    local = np.frombuffer(_read_exact(proc.stdout, 4 * count), dtype=np.int32)
  except EOFError:
    proc.wait()
    proc.stderr_thread.join(timeout=5)  # its last lines read
    said = "; its stderr ended: " + " | ".join(proc.stderr_tail) if proc.stderr_tail else ""
    raise RuntimeError(f"a tokenising worker process ({' '.join(proc.args)}) ended early "
                       f"with exit status {proc.returncode}{said}") from None
  return (words.split("\n") if words else []), local


def _serve(mode):
  """A worker: replies to each request on stdin until length 0 or end of input."""
  stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
  while True:
    header = stdin.read(_HEADER.size)
    if len(header) < _HEADER.size:
      return
    (size,) = _HEADER.unpack(header)
    if size == 0:
      return
    joined, local = _tokenize_batch_bytes(_read_exact(stdin, size).decode("utf-8"), mode)
    stdout.write(_REPLY.pack(len(joined), local.shape[0]))
    stdout.write(joined)
    stdout.write(local.tobytes())
    stdout.flush()


if __name__ == "__main__":
  _serve(sys.argv[1])
