"""Intrinsic evaluation sets: word analogies, WordSim-353 and SimLex-999.

The analogy set (Mikolov et al. 2013, questions-words.txt) is bundled. The two
similarity sets are not committed (licence); they are fetched on first use from
gensim's repository at tag 4.4.0 and checked against the sha256 of the copies
in the gensim 4.4.0 wheel. When gensim is installed its copy is used as a local
mirror, so no network is needed.

Words are lowercased on load: our tokenizers produce lowercase words (text8),
and intrinsic.py matches words case-insensitively anyway, exactly like gensim's
``evaluate_word_analogies(case_insensitive=True)`` / ``evaluate_word_pairs``
and like word2vec's compute-accuracy (which upper-cases both sides).
"""
import importlib.util
import os

from absl import logging

from tf_embeddings.data import fetch as fetch_lib
from tf_embeddings.data.errors import UserError

ANALOGIES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "evalsets",
                         "questions-words.txt")

_GENSIM_RAW = "https://raw.githubusercontent.com/piskvorky/gensim/4.4.0/gensim/test/test_data/"
# name -> (file name, sha256 of the file shipped in the gensim 4.4.0 wheel).
SIMILARITY_SETS = {
    "wordsim353": ("wordsim353.tsv",
                   "f92a022fc2537793a15bc3a8c162ebcd74990e033a228bb6388cb71e4c0b1e1d"),
    "simlex999": ("simlex999.txt",
                  "d5e0501971478a511430ee880bd0121e94ac701ba86d90544d83e6d2ba3db05d"),
}


def load_analogies(path=None):
  """Reads an analogy file in word2vec's questions-words.txt format.

  Sections start with ``: name``; every other non-blank line is ``a b c d``
  meaning a : b :: c : d. Lines without exactly four words are skipped with a
  warning (as gensim does).

  Args:
    path: the file; None for the bundled questions-words.txt.

  Returns:
    list of (section name, list of (a, b, c, d) lowercase word tuples), in file order.

  Raises:
    UserError: missing file, or a question before the first section header.
  """
  path = os.fspath(path) if path is not None else ANALOGIES
  if not os.path.isfile(path):
    raise UserError(f"analogy file '{path}' does not exist: pass a file in "
                    "questions-words.txt format, or omit it to use the bundled one")
  sections = []
  skipped = 0
  with open(path, encoding="utf-8", errors="replace") as f:
    for line_no, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      if line.startswith(":"):
        sections.append((line[1:].strip(), []))
        continue
      if not sections:
        raise UserError(f"analogy file '{path}' line {line_no} comes before any "
                        "': section' header: add one")
      words = line.lower().split()
      if len(words) != 4:
        skipped += 1
        continue
      sections[-1][1].append(tuple(words))
  if skipped:
    logging.warning("analogy file %s: skipped %d lines without exactly 4 words", path, skipped)
  return sections


def _gensim_copy(filename):
  """The file inside an installed gensim (without importing gensim), or None."""
  try:
    spec = importlib.util.find_spec("gensim")
  except (ImportError, ValueError):
    return None
  if spec is None or not spec.submodule_search_locations:
    return None
  for root in spec.submodule_search_locations:
    candidate = os.path.join(root, "test", "test_data", filename)
    if os.path.isfile(candidate):
      return candidate
  return None


def similarity_path(name):
  """Local path of similarity set `name`, fetched (or copied from gensim) if needed."""
  if name not in SIMILARITY_SETS:
    raise UserError(f"unknown similarity set {name!r}: choose one of "
                    f"{', '.join(SIMILARITY_SETS)}")
  filename, sha256 = SIMILARITY_SETS[name]
  try:
    return fetch_lib.fetch(name, _GENSIM_RAW + filename, sha256, filename=filename,
                           mirrors=(lambda: _gensim_copy(filename),))
  except UserError as e:
    raise UserError(f"{e} (or `pip install gensim==4.4.0`, which ships a copy)") from None


def load_similarity(name):
  """Loads a word-similarity benchmark.

  Args:
    name: "wordsim353" or "simlex999".

  Returns:
    list of (word1, word2, human score) with lowercase words, in file order.
    Comment lines (``#``) and lines that are not ``w1<TAB>w2<TAB>score`` are skipped,
    like gensim's evaluate_word_pairs.

  Raises:
    UserError: unknown name, or the file cannot be fetched (offline and no
      gensim installed). Callers skip that figure with a warning.
  """
  path = similarity_path(name)
  pairs = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      if not line.strip() or line.startswith("#"):
        continue
      parts = line.rstrip("\n").split("\t")
      if len(parts) != 3:
        continue
      try:
        score = float(parts[2])
      except ValueError:
        continue
      pairs.append((parts[0].strip().lower(), parts[1].strip().lower(), score))
  return pairs
