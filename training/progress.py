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
    if force or now - self.last >= self.every:
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

  The first step compiles; a later step compiles too when it takes more than `factor` times
  the fastest of the last `history` steps (e.g. the first step of a new shape: skip-gram
  compiles one program per window, in its first few blocks). A step can be recognised only
  once a faster one is seen, so `add` may also return the excess of earlier steps, at most
  once each: the seconds to leave out of a rate now.
  """

  def __init__(self, factor=3.0, history=32):
    self.factor = factor
    self.recent = collections.deque(maxlen=history)  # [seconds, excess already returned]
    self.first = None
    self.later_compilation = 0.0
    self.steps = 0

  def add(self, seconds):
    """Records one step's duration; returns the seconds newly recognised as compilation."""
    self.steps += 1
    if self.first is None:
      self.first = seconds
      return seconds
    self.recent.append([seconds, 0.0])
    fastest = min(s for s, _ in self.recent)
    found = 0.0
    for item in self.recent:
      if item[0] > self.factor * fastest and item[0] - fastest > item[1]:
        found += item[0] - fastest - item[1]
        item[1] = item[0] - fastest
    self.later_compilation += found
    return found

  @property
  def compilation(self):
    """Seconds of compilation so far: the first step less a steady one, plus the excesses."""
    if self.first is None:
      return 0.0
    steady = min((s for s, _ in self.recent), default=0.0)
    return max(0.0, self.first - steady) + self.later_compilation


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
