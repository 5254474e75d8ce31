"""Tests for data/evalsets.py: bundled analogies, fetched similarity sets, offline errors."""
import os

import pytest

from tf_embeddings.data import evalsets
from tf_embeddings.data import fetch as fetch_lib
from tf_embeddings.data.errors import UserError


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
  monkeypatch.setenv("EMBEDDINGS_CACHE", str(tmp_path / "cache"))


def test_bundled_analogies():
  sections = evalsets.load_analogies()
  names = [name for name, _ in sections]
  assert len(sections) == 14
  assert names[0] == "capital-common-countries" and names[-1] == "gram9-plural-verbs"
  assert sections[0][1][0] == ("athens", "greece", "baghdad", "iraq")
  assert sum(len(q) for _, q in sections) == 19544  # Mikolov et al. 2013: 8,869 + 10,675
  assert all(w == w.lower() for _, qs in sections for q in qs for w in q)


def test_analogy_file_format_errors(tmp_path, caplog):
  path = tmp_path / "a.txt"
  path.write_text(": one\nA B C D\n\nbad line\n: two\ne f g h\n")
  assert evalsets.load_analogies(path) == [("one", [("a", "b", "c", "d")]),
                                           ("two", [("e", "f", "g", "h")])]
  assert any("skipped 1 lines" in r.getMessage() for r in caplog.records)
  path.write_text("a b c d\n: s\n")
  with pytest.raises(UserError, match="line 1 comes before"):
    evalsets.load_analogies(path)
  with pytest.raises(UserError, match="does not exist"):
    evalsets.load_analogies(tmp_path / "missing.txt")


@pytest.mark.skipif(evalsets._gensim_copy("wordsim353.tsv") is None, reason="needs gensim")
@pytest.mark.parametrize("name,count,first", [
    ("wordsim353", 353, ("love", "sex", 6.77)),
    ("simlex999", 999, ("old", "new", 1.58)),
])
def test_similarity_sets_from_gensim_mirror(name, count, first, monkeypatch):
  # An unreachable URL proves the network is not used: the gensim copy is the mirror.
  monkeypatch.setattr(evalsets, "_GENSIM_RAW", "http://127.0.0.1:9/")
  pairs = evalsets.load_similarity(name)
  assert len(pairs) == count
  assert pairs[0] == first
  path = evalsets.similarity_path(name)
  assert path.startswith(fetch_lib.cache_dir())
  assert fetch_lib.sha256_of(path) == evalsets.SIMILARITY_SETS[name][1]


def test_similarity_offline_without_gensim(monkeypatch):
  monkeypatch.setattr(evalsets, "_gensim_copy", lambda filename: None)
  monkeypatch.setattr(evalsets, "_GENSIM_RAW", "http://127.0.0.1:9/")
  with pytest.raises(UserError, match=r"cannot download wordsim353 .*offline.*pip install gensim"):
    evalsets.load_similarity("wordsim353")
  assert not os.path.exists(os.path.join(fetch_lib.cache_dir(), "wordsim353.tsv"))


def test_similarity_wrong_mirror_checksum_is_not_used(tmp_path, monkeypatch):
  fake = tmp_path / "fake.tsv"
  fake.write_text("a\tb\t1.0\n")
  monkeypatch.setattr(evalsets, "_gensim_copy", lambda filename: str(fake))
  monkeypatch.setattr(evalsets, "_GENSIM_RAW", "http://127.0.0.1:9/")
  with pytest.raises(UserError, match="cannot download simlex999"):
    evalsets.load_similarity("simlex999")


def test_unknown_similarity_set():
  with pytest.raises(UserError, match="choose one of wordsim353, simlex999"):
    evalsets.load_similarity("men3000")
