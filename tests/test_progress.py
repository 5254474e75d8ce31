"""training/progress.py: the rate and ETA leave compilation out."""
import pytest

from training.progress import Progress, StepTimer


class Clock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_first_eta_counts_the_steady_rate_not_the_compilation():
  """As word2vec's loop uses them: a 30 s first block (compiling) then 1 s blocks of 1%."""
  clock, timer = Clock(), StepTimer()
  progress = Progress(100, every=0.0, clock=clock)
  progress.update(0)
  clock.now += 30.0
  assert timer.add(30.0) == 30.0
  progress.rebase(1)  # what the loop does after its first block
  # The second block compiles too (a new shape); it is only known once a steady one is seen.
  clock.now += 20.0
  assert timer.add(20.0) == 0.0
  progress.update(2)
  for done in range(3, 6):
    clock.now += 1.0
    progress.exclude(timer.add(1.0))
    rate = progress.update(done)
  assert rate == pytest.approx(1.0)
  assert progress.line(5).endswith("ETA 1m35s")  # 95% left at 1%/s
  # A later block that compiles (a new shape) is left out too.
  clock.now += 11.0
  excess = timer.add(11.0)
  assert excess == pytest.approx(10.0)
  progress.exclude(excess)
  assert progress.update(6) == pytest.approx(1.0)
  assert timer.compilation == pytest.approx(29.0 + 19.0 + 10.0)


def test_without_rebase_the_first_block_would_dominate():
  # The test above can fail: the old behaviour (no rebase) gives a rate of 4/33.
  clock = Clock()
  progress = Progress(100, every=0.0, clock=clock)
  progress.update(0)
  clock.now += 33.0
  assert progress.update(4) == pytest.approx(4 / 33)
