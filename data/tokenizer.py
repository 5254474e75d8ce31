"""Turns a line of text into tokens: the text8 filter or plain whitespace.

Two modes:

* ``text8``: what Matt Mahoney's ``wikifil.pl`` does to produce text8, minus the
  Wikipedia markup handling: lowercase, keep only runs of ASCII letters a-z,
  everything else (digits, punctuation, symbols, other scripts) separates tokens.
  Unlike ``wikifil.pl`` digits are not spelled out ("1776" is dropped, not
  "one seven seven six"), so numbers do not flood the vocabulary with digit names.
  Accented Latin letters are folded to ASCII first, so "Café" -> "cafe" and
  "naïve" -> "naive" (Unicode NFKD decomposition with combining marks removed,
  plus a small table for letters that do not decompose: ß -> ss, æ -> ae,
  œ -> oe, ø -> o, ł -> l, đ/ð -> d, þ -> th, ı -> i). Letters of other scripts
  (Greek, Cyrillic, CJK, ...) are separators, as in text8, whose vocabulary is
  pure ASCII.
* ``whitespace``: ``str.split()``, nothing else; case and punctuation are kept.

Neither mode can produce a token containing whitespace, so every token can be
written to ``vocab.tsv`` and to the word2vec formats.
"""
import re
import unicodedata

TOKENIZERS = ("text8", "whitespace")

_ASCII_WORD = re.compile(r"[a-z]+")
# Letters without an NFKD decomposition into ASCII, lowercase only (input is
# lowercased first).
_FOLD = str.maketrans({
    "ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d",
    "þ": "th", "ı": "i", "ŀ": "l", "ħ": "h", "ŧ": "t",
})


def fold_to_ascii(text):
  """Lowercases `text` and folds accented Latin letters to ASCII letters.

  Characters that have no ASCII letter equivalent are kept unchanged (the
  text8 tokenizer then treats them as separators).
  """
  return _NON_ASCII.sub(_fold_run, text.lower())


# Folding acts on the non-ASCII runs of the lowercased text only: the table and NFKD leave
# ASCII unchanged and NFKD's canonical reordering never crosses an ASCII character (all
# are starters), so this equals folding the whole text, without a Python step per
# character of long, mostly ASCII texts (data/tokenize_pool.py tokenises 4 MB at once).
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


def _fold(text):
  decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD))
  return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _fold_run(match):
  return _fold(match.group())


# bytes.translate table of text8_bytes: a-z kept, every other byte a space.
_SEPARATE = bytes(b if ord("a") <= b <= ord("z") else ord(" ") for b in range(256))


def text8_bytes(text):
  """The tokens of tokenize(text, "text8") as ASCII bytes, 2-3x faster on whole batches
  (data/tokenize_pool.py): fold_to_ascii's text, encoded, then bytes' translate (every byte
  but a-z becomes a space, the bytes of characters left non-ASCII too) and split(), in C
  where the regex's findall builds a str per token."""
  if text.isascii():
    data = text.encode("ascii").lower()
  else:
    data = fold_to_ascii(text).encode("utf-8")
  return data.translate(_SEPARATE).split()


def tokenize(line, mode="text8"):
  """Splits one line (or piece of a line) of text into tokens.

  Args:
    line: a str.
    mode: one of TOKENIZERS.

  Returns:
    list of str tokens, in order; empty for a line without tokens.

  Raises:
    ValueError: unknown mode.
  """
  if mode == "text8":
    if line.isascii():
      return _ASCII_WORD.findall(line.lower())
    return _ASCII_WORD.findall(fold_to_ascii(line))
  if mode == "whitespace":
    return line.split()
  raise ValueError(f"unknown tokenizer {mode!r}: choose one of {', '.join(TOKENIZERS)}")
