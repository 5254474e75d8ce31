"""Synthetic interactions with planted structure, for tests and the offline demo.

The generative story (all seeded):
  * `num_topics` latent topics. Item i has one topic t(i), drawn uniformly, and a
    popularity weight p(i) proportional to 1 / rank(i)^zipf over a random ranking
    (Zipf-like: a few items get most interactions).
  * User u has a taste vector over topics drawn from Dirichlet(taste_concentration)
    (small concentration = users like one or two topics).
  * User u makes `interactions_per_user` interactions (Poisson around the mean,
    at least 3); each picks an item with probability proportional to
    p(i) * taste_u[t(i)], without repeating items.
  * Side features: users get `group` = their favourite topic, seen through noise
    (correct with probability 0.7) and `region` (pure noise); items get `genres`
    = their topic plus, with probability 0.3, one random other topic, and `year`
    (noise).
  * Rating = 5 if the item's topic is the user's favourite, else 4 if the user's
    taste for it exceeds 1 / num_topics, else 1-3 at random; timestamps increase
    per user; sessions cut each user's stream into runs of 5.
A model that learns the planted tastes beats most-popular clearly; the tests use
that as a quality check that can fail.
"""
import dataclasses

import numpy as np

from tf_embeddings.data import interactions as ilib


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  num_users: int = 500
  num_items: int = 300
  num_topics: int = 8
  interactions_per_user: int = 30
  zipf: float = 0.8
  taste_concentration: float = 0.3
  seed: int = 0


def generate(config=SyntheticConfig()):
  """Returns synthetic `Interactions` (see the module docstring)."""
  c = config
  rng = np.random.RandomState(c.seed)
  n_items = c.num_items
  topic = rng.randint(c.num_topics, size=n_items)
  rank = rng.permutation(n_items) + 1
  pop = 1.0 / rank ** c.zipf
  taste = rng.dirichlet([c.taste_concentration] * c.num_topics, size=c.num_users)
  users, items, labels, times, sessions = [], [], [], [], []
  for u in range(c.num_users):
    n = min(max(3, rng.poisson(c.interactions_per_user)), n_items // 2)
    w = pop * taste[u, topic] + 1e-12
    chosen = rng.choice(n_items, size=n, replace=False, p=w / w.sum())
    fav = int(np.argmax(taste[u]))
    t0 = rng.randint(1_000_000)
    for k, i in enumerate(chosen):
      if topic[i] == fav:
        r = 5.0
      elif taste[u, topic[i]] > 1.0 / c.num_topics:
        r = 4.0
      else:
        r = float(rng.randint(1, 4))
      users.append(u)
      items.append(i)
      labels.append(r)
      times.append(t0 + 60 * k)
      sessions.append(u * 1000 + k // 5)
  fav_topic = np.argmax(taste, axis=1)
  group = [
      [f"t{fav_topic[u]}" if rng.rand() < 0.7 else f"t{rng.randint(c.num_topics)}"]
      for u in range(c.num_users)]
  region = [[f"r{rng.randint(5)}"] for _ in range(c.num_users)]
  genres = []
  for i in range(n_items):
    g = [f"t{topic[i]}"]
    if rng.rand() < 0.3:
      g.append(f"t{rng.randint(c.num_topics)}")
    genres.append(sorted(set(g)))
  year = [[str(1980 + rng.randint(30))] for _ in range(n_items)]
  _, session_index = np.unique(np.asarray(sessions), return_inverse=True)
  return ilib.Interactions(
      name="synthetic",
      user_ids=np.array([f"u{u}" for u in range(c.num_users)], dtype=object),
      item_ids=np.array([f"i{i}" for i in range(n_items)], dtype=object),
      users=np.asarray(users, np.int64),
      items=np.asarray(items, np.int64),
      labels=np.asarray(labels, np.float32),
      timestamps=np.asarray(times, np.float64),
      sessions=session_index.astype(np.int64),
      user_features=(ilib.build_feature("group", group), ilib.build_feature("region", region)),
      item_features=(ilib.build_feature("genres", genres), ilib.build_feature("year", year)),
      item_titles=[f"item {i} (topic {topic[i]})" for i in range(n_items)])


def _word(i):
  """A distinct a-z word for every id: "w" + the id in base 26 written with letters."""
  s = ""
  while True:
    i, r = divmod(i, 26)
    s = chr(97 + r) + s
    if i == 0:
      return "w" + s


def write_zipf_corpus(path, num_tokens, distinct, exponent=1.0, words_per_line=20, seed=0):
  """Writes a text corpus of `num_tokens` words drawn with P(rank r) ~ 1 / r^exponent from
  `distinct` words (text8-tokenizer-safe, a-z only), `words_per_line` a line, generated a
  million tokens at a time (memory: the word table, not the corpus). For benchmarks: e.g.
  10M tokens, 1.15M words, exponent 0.3 give about 1M words seen at least 5 times."""
  rng = np.random.default_rng(seed)
  words = np.array([_word(i) for i in range(distinct)])
  p = 1.0 / np.arange(1, distinct + 1, dtype=np.float64) ** exponent
  cdf = np.cumsum(p / p.sum())
  written = 0
  with open(path, "w", encoding="ascii") as f:
    while written < num_tokens:
      n = min(1_000_000 // words_per_line * words_per_line, num_tokens - written)
      ids = np.minimum(np.searchsorted(cdf, rng.random(n)), distinct - 1)
      drawn = words[ids].tolist()
      f.write("\n".join(" ".join(drawn[i:i + words_per_line])
                        for i in range(0, n, words_per_line)) + "\n")
      written += n
