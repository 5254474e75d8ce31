"""Tests for data/tokenizer.py and data/corpus.py: streaming, decoding, specs, errors."""
import gzip
import hashlib
import os
import zipfile

import pytest

from tf_embeddings.data import corpus as corpus_lib
from tf_embeddings.data import tokenizer
from tf_embeddings.data.errors import UserError


def write(path, data):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
  return str(path)


def tokens_of(corpus):
  return [t for chunk in corpus.iter_token_chunks(7) for t in chunk]


# ---------------------------------------------------------------- tokenizer


@pytest.mark.parametrize("line,expected", [
    ("The cat's 3 hats, e.g. U.S.A!", ["the", "cat", "s", "hats", "e", "g", "u", "s", "a"]),
    ("Café naïve Straße ÆON", ["cafe", "naive", "strasse", "aeon"]),
    ("Москва and 東京 x", ["and", "x"]),
    ("1776 -- 42", []),
    ("", []),
])
def test_text8_tokenizer(line, expected):
  assert tokenizer.tokenize(line, "text8") == expected


def test_whitespace_tokenizer_keeps_case_and_punctuation():
  assert tokenizer.tokenize(" The  cat's\thats,\u00a0ok ", "whitespace") == [
      "The", "cat's", "hats,", "ok"]


def test_unknown_tokenizer():
  with pytest.raises(ValueError, match="unknown tokenizer"):
    tokenizer.tokenize("x", "bpe")
  assert tokenizer.TOKENIZERS == ("text8", "whitespace")


# ---------------------------------------------------------------- streaming


def test_long_line_read_in_pieces_without_cutting_tokens(tmp_path):
  words = [f"w{'x' * (i % 7)}" for i in range(2000)]
  path = write(tmp_path / "one_line.txt", " ".join(words))  # a single line, no newline
  c = corpus_lib.resolve_corpus(path, tokenizer="whitespace", block_size=64)
  pieces = list(c.iter_lines())
  assert len(pieces) > 100  # really streamed in small pieces
  assert all(len(p.encode()) <= 2 * 64 for p in pieces)
  assert [t for p in pieces for t in p.split()] == words
  assert tokens_of(c) == words


def test_lines_crlf_and_blank_lines(tmp_path):
  path = write(tmp_path / "a.txt", "one two\r\n\r\nthree\n")
  c = corpus_lib.resolve_corpus(path, block_size=64)
  assert list(c.iter_lines()) == ["one two", "", "three"]
  c = corpus_lib.resolve_corpus(path, block_size=4)  # long lines come in pieces
  assert tokens_of(c) == ["one", "two", "three"]


def test_utf8_char_split_across_block_boundary_is_not_an_error(tmp_path):
  # "é" is 2 bytes, "東" 3 bytes; with these block sizes some must straddle a boundary.
  text = ("abé 東京 " * 50).strip()
  path = write(tmp_path / "u.txt", text)
  for block in (3, 4, 5, 7):
    c = corpus_lib.resolve_corpus(path, tokenizer="whitespace", block_size=block)
    assert " ".join(c.iter_lines()) == text
    assert c.replaced_bytes == 0 and c.bad_lines == 0


def test_giant_token_without_whitespace_cut_on_char_boundary(tmp_path):
  text = "é" * 200  # 400 bytes, no whitespace at all, block 8 -> forced cut
  path = write(tmp_path / "g.txt", text)
  c = corpus_lib.resolve_corpus(path, tokenizer="whitespace", block_size=8)
  assert "".join(c.iter_lines()) == text
  assert c.replaced_bytes == 0


@pytest.mark.parametrize("block", [4, 7, 64, 1 << 20])
def test_texts_have_the_tokens_and_accounting_of_lines(tmp_path, caplog, block):
  """iter_texts (a block of lines decoded at once) = iter_lines, bad bytes included."""
  data = (b"one two\r\n\r\nthr\xffee caf\xc3\xa9\n" + b"long " * 40 + b"\n\xfe x\n"
          + "abé 東京 ".encode() * 9 + b"\r\nlast")
  path = write(tmp_path / "mixed.txt", data)
  for mode in ("whitespace", "text8"):
    lines = corpus_lib.resolve_corpus(path, tokenizer=mode, block_size=block)
    texts = corpus_lib.resolve_corpus(path, tokenizer=mode, block_size=block)
    caplog.clear()
    expected = [t for line in lines.iter_lines() for t in tokenizer.tokenize(line, mode)]
    line_warnings = [r.getMessage() for r in caplog.records]
    caplog.clear()
    got = [t for text in texts.iter_texts() for t in tokenizer.tokenize(text, mode)]
    assert got == expected
    assert (texts.replaced_bytes, texts.bad_lines) == (lines.replaced_bytes, lines.bad_lines)
    assert texts.replaced_bytes == 2
    assert len(line_warnings) == 1
    if block >= 64:  # (smaller blocks cut lines into pieces, which the numbers count)
      assert "line 3 " in line_warnings[0]
    assert [r.getMessage() for r in caplog.records] == line_warnings  # the same line named


def test_non_utf8_bytes_are_replaced_and_counted(tmp_path, caplog):
  path = write(tmp_path / "latin1.txt", b"caf\xe9 bar\nok line\nna\xefve \xff\xfe x\n")
  c = corpus_lib.resolve_corpus(path, tokenizer="whitespace")
  lines = list(c.iter_lines())
  assert lines == ["caf\ufffd bar", "ok line", "na\ufffdve \ufffd\ufffd x"]
  assert c.replaced_bytes == 4
  assert c.bad_lines == 2
  warnings = [r for r in caplog.records if "not valid UTF-8" in r.getMessage()]
  list(c.iter_lines())  # a second pass must not warn again
  assert len([r for r in caplog.records if "not valid UTF-8" in r.getMessage()]) == 1
  assert len(warnings) == 1
  assert c.replaced_bytes == 4  # counts are per pass, not cumulative
  t8 = corpus_lib.resolve_corpus(path, tokenizer="text8")
  assert tokens_of(t8) == ["caf", "bar", "ok", "line", "na", "ve", "x"]


def test_chunks_have_exact_size_and_corpus_order(tmp_path):
  words = [f"t{i}" for i in range(23)]
  path = write(tmp_path / "c.txt", "\n".join(" ".join(words[i:i + 5]) for i in range(0, 23, 5)))
  c = corpus_lib.resolve_corpus(path, tokenizer="whitespace")
  chunks = list(c.iter_token_chunks(chunk_tokens=7))
  assert [len(ch) for ch in chunks] == [7, 7, 7, 2]
  assert sum(chunks, []) == words
  with pytest.raises(ValueError):
    next(c.iter_token_chunks(0))


# ---------------------------------------------------------------- specs


def test_default_corpus_is_bundled_sotu():
  c = corpus_lib.resolve_corpus(None)
  assert c.sources[0].path.endswith(os.path.join("data", "corpora", "sotu.txt.gz"))
  assert "sotu" in c.describe()
  first = next(c.iter_token_chunks(50))
  assert len(first) == 50 and all(t.isascii() and t.isalpha() for t in first)
  assert corpus_lib.resolve_corpus("").name == c.name


def test_gzip_file(tmp_path):
  path = tmp_path / "a.txt.gz"
  with gzip.open(path, "wb") as f:
    f.write("hello gzip world\nsecond line\n".encode())
  c = corpus_lib.resolve_corpus(str(path), block_size=5)
  assert tokens_of(c) == ["hello", "gzip", "world", "second", "line"]


def test_damaged_gzip_is_user_error(tmp_path):
  path = tmp_path / "bad.gz"
  data = gzip.compress(b"hello world " * 1000)
  path.write_bytes(data[:len(data) // 2])
  c = corpus_lib.Corpus("bad", [corpus_lib._Source(str(path))])
  with pytest.raises(UserError, match="damaged"):
    list(c.iter_lines())


def test_comma_list_and_directory(tmp_path):
  a = write(tmp_path / "a.txt", "alpha")
  b = write(tmp_path / "b.txt", "beta")
  c = corpus_lib.resolve_corpus(f"{b}, {a}")
  assert tokens_of(c) == ["beta", "alpha"]  # the order given, not sorted

  d = tmp_path / "dir"
  write(d / "b" / "2.txt", "two")
  write(d / "a.txt", "one")
  write(d / "b" / "1.txt", "one and a half")
  write(d / ".hidden.txt", "hidden")
  write(d / ".git" / "x.txt", "hidden")
  c = corpus_lib.resolve_corpus(str(d))
  assert [os.path.relpath(p, d) for p in c.paths] == ["a.txt", os.path.join("b", "1.txt"),
                                                      os.path.join("b", "2.txt")]
  assert tokens_of(c) == ["one", "one", "and", "a", "half", "two"]
  assert "3 files" in c.describe()


def test_missing_paths_and_empty_inputs(tmp_path):
  with pytest.raises(UserError, match=r"corpus file '.*nope.txt' does not exist: pass --corpus"):
    corpus_lib.resolve_corpus(str(tmp_path / "nope.txt"))
  good = write(tmp_path / "g.txt", "words here")
  with pytest.raises(UserError, match="nope2.txt' does not exist"):
    corpus_lib.resolve_corpus(f"{good},{tmp_path / 'nope2.txt'}")
  (tmp_path / "emptydir").mkdir()
  with pytest.raises(UserError, match="contains no"):
    corpus_lib.resolve_corpus(str(tmp_path / "emptydir"))
  empty = write(tmp_path / "empty.txt", b"")
  with pytest.raises(UserError, match="has no tokens"):
    corpus_lib.resolve_corpus(empty)
  punct = write(tmp_path / "punct.txt", "... !!! 123 -- ?\n;;;\n")
  with pytest.raises(UserError, match="has no tokens"):
    corpus_lib.resolve_corpus(punct)
  assert tokens_of(corpus_lib.resolve_corpus(punct, tokenizer="whitespace"))[:2] == ["...", "!!!"]
  with pytest.raises(ValueError):
    corpus_lib.resolve_corpus(good, tokenizer="bpe")


# ---------------------------------------------------------------- text8


def _fake_text8(tmp_path, text=b"anarchism originated as a term of abuse"):
  zpath = tmp_path / "build" / "text8.zip"
  zpath.parent.mkdir()
  with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED) as z:
    z.writestr("text8", text)
  return zpath, hashlib.sha256(zpath.read_bytes()).hexdigest()


def test_text8_from_cache_streams_zip_member(tmp_path, monkeypatch):
  zpath, digest = _fake_text8(tmp_path)
  cache = tmp_path / "cache"
  cache.mkdir()
  os.replace(zpath, cache / "text8.zip")
  monkeypatch.setenv("EMBEDDINGS_CACHE", str(cache))
  monkeypatch.setattr(corpus_lib, "TEXT8_SHA256", digest)
  monkeypatch.setattr(corpus_lib, "TEXT8_URL", "http://127.0.0.1:9/text8.zip")
  c = corpus_lib.resolve_corpus("text8", block_size=8)
  assert c.name == "text8"
  assert tokens_of(c) == "anarchism originated as a term of abuse".split()


def test_text8_real_checksum_and_url():
  assert corpus_lib.TEXT8_URL == "http://mattmahoney.net/dc/text8.zip"
  assert len(corpus_lib.TEXT8_SHA256) == 64
  int(corpus_lib.TEXT8_SHA256, 16)


def test_text8_offline_error(tmp_path, monkeypatch):
  monkeypatch.setenv("EMBEDDINGS_CACHE", str(tmp_path / "cache"))
  monkeypatch.setattr(corpus_lib, "TEXT8_URL", "http://127.0.0.1:9/text8.zip")
  with pytest.raises(UserError, match=r"cannot download text8 .*offline.*text8.zip"):
    corpus_lib.resolve_corpus("text8")


def test_text8_wrong_checksum_in_cache_is_refetched_and_fails_offline(tmp_path, monkeypatch):
  cache = tmp_path / "cache"
  write(cache / "text8.zip", b"not the real file")
  monkeypatch.setenv("EMBEDDINGS_CACHE", str(cache))
  monkeypatch.setattr(corpus_lib, "TEXT8_URL", "http://127.0.0.1:9/text8.zip")
  with pytest.raises(UserError, match="cannot download text8"):
    corpus_lib.resolve_corpus("text8")
