"""A progress line every few seconds: percent done, rate, loss and ETA."""
import collections
import time

from absl import logging


class Progress:
  """Logs `label: 12.3% | 350,000 words/s | loss 2.31 | ETA 1m05s` every `every` seconds."""

  def __init__(self, total, unit="words", every=5.0, label="train", clock=time.monotonic):
    self.total = max(int(total), 1)
    self.unit = unit
    self.every = every
    self.label = label
    self.clock = clock
    self.start = clock()
    self.last = self.start
    self.done_at_start = None
    self.rate = 0.0

  def update(self, done, loss=None, force=False):
    """Reports `done` units so far; logs if `every` seconds passed. Returns the rate."""
    now = self.clock()
    if self.done_at_start is None:
      self.done_at_start = done
      self.start = now
      return 0.0
    elapsed = max(now - self.start, 1e-9)
    self.rate = (done - self.done_at_start) / elapsed
    if force or (now - self.last >= self.every and self.rate > 0):
      self.last = now
      logging.info("%s", self.line(done, loss))
    return self.rate

  def exclude(self, seconds):
    """Leaves `seconds` (e.g. an evaluation) out of the rate."""
    self.start += seconds

  def rebase(self, done):
    """Measures the rate from now and `done` on (e.g. after a first step that compiled)."""
    self.done_at_start = done
    self.start = self.clock()

  def line(self, done, loss=None):
    pct = 100.0 * min(done, self.total) / self.total
    eta = (self.total - done) / self.rate if self.rate > 0 else float("nan")
    parts = [f"{self.label}: {pct:5.1f}%", f"{self.rate:,.0f} {self.unit}/s"]
    if loss is not None:
      parts.append(f"loss {float(loss):.4f}")
    parts.append(f"ETA {format_seconds(eta)}")
    return " | ".join(parts)


class StepTimer:
  """Tells compilation from steady work in the durations of repeated steps.

  A step compiles the first time its shape (`key`) is seen: word2vec's first block, and for
  skip-gram the first block of each reduced window (one program per window). Blocks of
  different keys also differ in cost (a window of 5 is several times a window of 1), so each
  key is compared with itself: its compilation is its first block less the median of its
  later ones.
  """

  def __init__(self, history=32):
    self.history = history
    self.first = {}   # key -> seconds of its first step
    self.recent = {}  # key -> deque of its later steps' seconds

  def add(self, seconds, key=None):
    """Records one step; returns True if it was the first of its key (it compiled)."""
    if key not in self.first:
      self.first[key] = seconds
      self.recent[key] = collections.deque(maxlen=self.history)
      return True
    self.recent[key].append(seconds)
    return False

  @property
  def compilation(self):
    """Seconds of compilation so far: each key's first step less a steady one of that key
    (of any key if it has none yet)."""
    everything = sorted(x for q in self.recent.values() for x in q)
    overall = everything[len(everything) // 2] if everything else 0.0
    total = 0.0
    for key, first in self.first.items():
      later = sorted(self.recent[key])
      steady = later[len(later) // 2] if later else overall
      total += max(0.0, first - steady)
    return total


def format_seconds(s):
  if s != s or s == float("inf"):  # nan / inf
    return "?"
  s = int(round(s))
  h, rem = divmod(s, 3600)
  m, sec = divmod(rem, 60)
  if h:
    return f"{h}h{m:02d}m"
  if m:
    return f"{m}m{sec:02d}s"
  return f"{sec}s"
