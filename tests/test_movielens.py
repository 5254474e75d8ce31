"""MovieLens readers on tiny hand-made files in the three formats, and the mirror logic."""
import os
import zipfile

import numpy as np
import pytest

from tf_embeddings.data import fetch as fetch_lib
from tf_embeddings.data import movielens
from tf_embeddings.data.errors import UserError

GENRE_FLAGS = ["0"] * 19


def _flags(*names):
  f = list(GENRE_FLAGS)
  for n in names:
    f[movielens._ML100K_GENRES.index(n)] = "1"  # pylint: disable=protected-access
  return "|".join(f)


def write_100k(d):
  os.makedirs(d, exist_ok=True)
  with open(os.path.join(d, "u.data"), "w") as f:
    f.write("1\t10\t5\t100\n2\t20\t3\t101\n1\t20\t4\t102\n")
  with open(os.path.join(d, "u.item"), "w", encoding="latin-1") as f:
    f.write(f"10|Toy Story (1995)|01-Jan-1995||http://x|{_flags('Animation', 'Comedy')}\n")
    f.write(f"20|Heat (1995)|01-Jan-1995||http://y|{_flags('Action')}\n")
    f.write(f"30|Caf\xe9 (1996)|01-Jan-1996||http://z|{_flags('Drama')}\n")
  with open(os.path.join(d, "u.user"), "w") as f:
    f.write("1|24|M|technician|85711\n2|53|F|other|94043\n")
  return d


def write_1m(d):
  os.makedirs(d, exist_ok=True)
  with open(os.path.join(d, "ratings.dat"), "w") as f:
    f.write("1::10::5::100\n2::20::3::101\n1::20::4::102\n")
  with open(os.path.join(d, "movies.dat"), "w", encoding="latin-1") as f:
    f.write("10::Toy Story (1995)::Animation|Comedy\n20::Heat (1995)::Action\n"
            "30::Caf\xe9 (1996)::Drama\n")
  with open(os.path.join(d, "users.dat"), "w") as f:
    f.write("1::M::18::technician::85711\n2::F::50::other::94043\n")
  return d


def write_atomic(d, prefix="ml-100k"):
  os.makedirs(d, exist_ok=True)
  with open(os.path.join(d, prefix + ".inter"), "w") as f:
    f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
            "1\t10\t5\t100\n2\t20\t3\t101\n1\t20\t4\t102\n")
  with open(os.path.join(d, prefix + ".item"), "w") as f:
    f.write("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
            "10\tToy Story\t1995\tAnimation Comedy\n20\tHeat\t1995\tAction\n"
            "30\tCaf\xe9\t1996\tDrama\n")
  with open(os.path.join(d, prefix + ".user"), "w") as f:
    f.write("user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
            "1\t24\tM\ttechnician\t85711\n2\t53\tF\tother\t94043\n")
  return d


def _summary(data, feature):
  """Per-entity token strings of one feature, for format-independent comparisons."""
  f = {x.name: x for x in data.user_features + data.item_features}[feature]
  return [sorted(f.vocab[t] for t in row if t) for row in f.values]


@pytest.mark.parametrize("writer", [write_100k, write_1m, write_atomic])
def test_three_formats_give_the_same_data(tmp_path, writer):
  d = movielens.read_directory(writer(str(tmp_path / "ml")), "movielens-test")
  assert list(d.user_ids) == ["1", "2"]
  # Items from the item file without ratings are part of the corpus.
  assert list(d.item_ids) == ["10", "20", "30"]
  np.testing.assert_array_equal(d.users, [0, 1, 0])
  np.testing.assert_array_equal(d.items, [0, 1, 1])
  np.testing.assert_array_equal(d.labels, [5, 3, 4])
  np.testing.assert_array_equal(d.timestamps, [100, 101, 102])
  assert _summary(d, "genres") == [["Animation", "Comedy"], ["Action"], ["Drama"]]
  assert _summary(d, "year") == [["1995"], ["1995"], ["1996"]]
  assert _summary(d, "title")[0] == ["story", "toy"]
  assert _summary(d, "gender") == [["M"], ["F"]]
  assert _summary(d, "occupation") == [["technician"], ["other"]]
  # 24 -> 18-24 group, 53 -> 50-55 group (the ML-1M codes).
  assert _summary(d, "age") == [["18"], ["50"]]
  assert d.item_titles[0] == "Toy Story (1995)"


def test_age_buckets():
  assert [movielens.age_bucket(a) for a in ("7", "18", "24", "25", "44", "49", "55", "56",
                                            "x")] == ["1", "18", "18", "25", "35", "45",
                                                      "50", "56", ""]


def test_directory_without_movielens_is_a_user_error(tmp_path):
  with pytest.raises(UserError, match="holds no MovieLens data"):
    movielens.read_directory(str(tmp_path), "movielens-100k")
  with pytest.raises(UserError, match="not a directory"):
    movielens.read_directory(str(tmp_path / "missing"), "movielens-100k")


def _offline(monkeypatch, tmp_path):
  monkeypatch.setenv("EMBEDDINGS_CACHE", str(tmp_path / "cache"))

  def no_network(name, url, sha256=None, **_):
    raise UserError(f"cannot download {name} from {url}: this machine looks offline")

  monkeypatch.setattr(fetch_lib, "fetch", no_network)


def test_offline_100k_uses_the_recbole_wheel_mirror(monkeypatch, tmp_path):
  _offline(monkeypatch, tmp_path)
  src = write_atomic(str(tmp_path / "src"))
  wheel = str(tmp_path / "fake.whl")
  with zipfile.ZipFile(wheel, "w") as z:
    for name in os.listdir(src):
      z.write(os.path.join(src, name), "recbole/dataset_example/ml-100k/" + name)
    z.write(os.path.join(src, "ml-100k.inter"), "recbole/other/ignored.inter")
  monkeypatch.setattr(movielens, "_recbole_wheel", lambda: wheel)
  d = movielens.load("movielens-100k")
  assert len(d) == 3 and d.num_items == 3
  cached = os.path.join(str(tmp_path / "cache"), "ml-100k-recbole")
  assert sorted(os.listdir(cached)) == ["ml-100k.inter", "ml-100k.item", "ml-100k.user"]


def test_offline_without_mirror_names_the_fix(monkeypatch, tmp_path):
  _offline(monkeypatch, tmp_path)
  monkeypatch.setattr(movielens, "_recbole_wheel", lambda: None)
  with pytest.raises(UserError, match="offline.*TWOTOWER_RECBOLE_WHEEL"):
    movielens.load("movielens-100k")
  with pytest.raises(UserError, match="offline"):
    movielens.load("movielens-1m")


def test_wheel_with_wrong_checksum_is_ignored(monkeypatch, tmp_path):
  monkeypatch.setenv("EMBEDDINGS_CACHE", str(tmp_path / "cache"))
  bad = tmp_path / "recbole.whl"
  bad.write_bytes(b"not the wheel")
  monkeypatch.setenv(movielens.RECBOLE_ENV, str(bad))

  def no_pip(*_, **__):
    raise OSError("no network in tests")

  monkeypatch.setattr(movielens.subprocess, "run", no_pip)
  assert movielens._recbole_wheel() is None  # pylint: disable=protected-access


def test_md5_mismatch_is_a_user_error(monkeypatch, tmp_path):
  monkeypatch.setenv("EMBEDDINGS_CACHE", str(tmp_path / "cache"))
  fake = tmp_path / "ml-1m.zip"
  with zipfile.ZipFile(fake, "w") as z:
    z.writestr("ml-1m/ratings.dat", "1::1::5::1\n")
  monkeypatch.setattr(fetch_lib, "fetch", lambda *a, **k: str(fake))
  with pytest.raises(UserError, match="md5 .* GroupLens publishes"):
    movielens.load("movielens-1m")
