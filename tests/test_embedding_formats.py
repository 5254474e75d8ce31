"""Round trips for data/embedding_formats.py through our loaders and through gensim."""
import os

import numpy as np
import pytest

from tf_embeddings.data import embedding_formats as ef
from tf_embeddings.data.errors import UserError

WORDS = ["<unk>", "the", "café", "naïve", "東京", "x"]


def vectors(n=len(WORDS), dim=5, seed=0):
  rng = np.random.default_rng(seed)
  v = rng.normal(size=(n, dim)).astype(np.float32)
  v[1, 0] = 1e-30  # tiny and huge values must survive the text format exactly
  v[2, 1] = -3.4e38
  return v


def listing(directory):
  return sorted(os.listdir(directory))


@pytest.mark.parametrize("binary", [False, True])
def test_word2vec_round_trip_ours(tmp_path, binary):
  v = vectors()
  path = tmp_path / ("e.bin" if binary else "e.txt")
  (ef.save_word2vec_binary if binary else ef.save_word2vec_text)(path, WORDS, v)
  words, got = ef.load_word2vec(path, binary=binary)
  assert words == WORDS
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, v)  # exact: 9 significant digits round-trip float32
  assert listing(tmp_path) == [path.name]


def test_word2vec_text_layout(tmp_path):
  path = tmp_path / "e.txt"
  ef.save_word2vec_text(path, ["a", "b"], np.array([[0.5, -1], [2, 0.25]]))
  assert path.read_text() == "2 2\na 0.5 -1\nb 2 0.25\n"
  path = tmp_path / "e.bin"
  ef.save_word2vec_binary(path, ["a"], np.array([[1.0, -2.0]]))
  assert path.read_bytes() == b"1 2\na " + np.array([1, -2], "<f4").tobytes() + b"\n"


@pytest.mark.parametrize("binary", [False, True])
def test_word2vec_round_trip_gensim(tmp_path, binary):
  keyedvectors = pytest.importorskip("gensim.models.keyedvectors")
  v = vectors(dim=7)
  path = tmp_path / "ours"
  (ef.save_word2vec_binary if binary else ef.save_word2vec_text)(path, WORDS, v)
  kv = keyedvectors.KeyedVectors.load_word2vec_format(str(path), binary=binary)
  assert kv.index_to_key == WORDS
  np.testing.assert_array_equal(kv.vectors, v)
  # And gensim's own file through our loader (gensim's binary has no newlines).
  theirs = tmp_path / "theirs"
  kv.save_word2vec_format(str(theirs), binary=binary)
  words, got = ef.load_word2vec(theirs, binary=binary)
  assert words == WORDS
  np.testing.assert_allclose(got, v, rtol=1e-6)


def test_load_c_tool_text_with_trailing_spaces(tmp_path):
  path = tmp_path / "c.txt"
  path.write_bytes(b"2 3\n</s> 0.1 0.2 0.3 \nthe -1 0 1 \n")
  words, got = ef.load_word2vec(path, binary=False)
  assert words == ["</s>", "the"]
  np.testing.assert_allclose(got, [[0.1, 0.2, 0.3], [-1, 0, 1]])


@pytest.mark.parametrize("content,binary,reason", [
    (b"", False, "first line"),
    (b"two 3\n", False, "first line"),
    (b"2 3\na 1 2 3\n", False, "found 1"),
    (b"1 3\na 1 2\n", False, "2 values, expected 3"),
    (b"1 2\na 1 zz\n", False, "not a number"),
    (b"1 2\na \x00\x00", True, "truncated"),
    (b"1 2\n\xff\xfe " + bytes(8), True, "not UTF-8"),
])
def test_load_malformed(tmp_path, content, binary, reason):
  path = tmp_path / "bad"
  path.write_bytes(content)
  with pytest.raises(UserError, match=reason):
    ef.load_word2vec(path, binary=binary)


def test_load_missing(tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    ef.load_word2vec(tmp_path / "nope.bin", binary=True)


@pytest.mark.parametrize("save", [ef.save_word2vec_text, ef.save_word2vec_binary])
@pytest.mark.parametrize("bad_words,match", [
    (["a", "new york"], "whitespace"),
    (["a", "tab\tword"], "whitespace"),
    (["a", ""], "non-empty"),
    (["a", "a"], "duplicate"),
    (["a"], "2 vectors"),
])
def test_word2vec_refuses_unwritable_words(tmp_path, save, bad_words, match):
  with pytest.raises(ValueError, match=match):
    save(tmp_path / "e", bad_words, np.zeros((2, 3)))
  assert listing(tmp_path) == []


def test_failure_mid_write_leaves_old_file_and_no_partial(tmp_path, monkeypatch):
  path = tmp_path / "e.txt"
  ef.save_word2vec_text(path, ["old"], np.ones((1, 2)))
  before = path.read_bytes()
  calls = []
  real = ef._format_row

  def failing(word, row, fmt):
    calls.append(word)
    if len(calls) == 3:
      raise OSError("disk full")
    return real(word, row, fmt)

  monkeypatch.setattr(ef, "_format_row", failing)
  with pytest.raises(OSError, match="disk full"):
    ef.save_word2vec_text(path, WORDS, vectors())
  assert len(calls) == 3  # it really failed in the middle
  assert path.read_bytes() == before
  assert listing(tmp_path) == ["e.txt"]  # no temporary file left behind
  calls.clear()
  with pytest.raises(OSError):
    ef.save_word2vec_text(tmp_path / "new.txt", WORDS, vectors())
  assert listing(tmp_path) == ["e.txt"]


def test_projector_files(tmp_path):
  v = vectors(n=3, dim=2)
  paths = ef.save_projector(tmp_path / "proj", ["<unk>", "new york", "b"], v, counts=[5, 3, 2])
  assert listing(tmp_path / "proj") == ["metadata.tsv", "projector_config.pbtxt", "vectors.tsv"]
  assert (tmp_path / "proj" / "metadata.tsv").read_text() == (
      "word\tcount\n<unk>\t5\nnew york\t3\nb\t2\n")
  rows = np.loadtxt(paths["vectors"], delimiter="\t", dtype=np.float32)
  np.testing.assert_array_equal(rows, v)
  config = (tmp_path / "proj" / "projector_config.pbtxt").read_text()
  assert 'tensor_path: "vectors.tsv"' in config and 'metadata_path: "metadata.tsv"' in config
  ef.save_projector(tmp_path / "p2", ["a", "b", "c"], v)
  assert (tmp_path / "p2" / "metadata.tsv").read_text() == "a\nb\nc\n"  # one column: no header
  with pytest.raises(ValueError, match="tab or newline"):
    ef.save_projector(tmp_path / "p3", ["a", "b\tc", "d"], v)
  with pytest.raises(ValueError, match="counts"):
    ef.save_projector(tmp_path / "p3", ["a", "b", "d"], v, counts=[1])


def test_projector_config_parses_as_protobuf(tmp_path):
  projector = pytest.importorskip("tensorboard.plugins.projector.projector_config_pb2")
  text_format = pytest.importorskip("google.protobuf.text_format")
  ef.save_projector(tmp_path, ["a", "b"], np.eye(2))
  config = text_format.Parse((tmp_path / "projector_config.pbtxt").read_text(),
                             projector.ProjectorConfig())
  assert config.embeddings[0].tensor_path == "vectors.tsv"
  assert config.embeddings[0].metadata_path == "metadata.tsv"


def test_npy_dir_and_prefix(tmp_path):
  v = vectors()
  vec_path, vocab_path = ef.save_npy(tmp_path, WORDS, v)
  assert (vec_path, vocab_path) == (str(tmp_path / "vectors.npy"), str(tmp_path / "vocab.txt"))
  words, got = ef.load_npy(tmp_path)
  assert words == WORDS
  np.testing.assert_array_equal(got, v)
  assert np.load(vec_path).dtype == np.float32
  ef.save_npy(tmp_path / "run" / "emb", WORDS, v)
  assert listing(tmp_path / "run") == ["emb.vectors.npy", "emb.vocab.txt"]
  words, got = ef.load_npy(tmp_path / "run" / "emb")
  assert words == WORDS
  with pytest.raises(UserError, match="does not exist"):
    ef.load_npy(tmp_path / "missing")
