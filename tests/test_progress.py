"""training/progress.py: the rate and ETA leave compilation out."""
import pytest

from tf_embeddings.training.progress import Progress, StepTimer


class Clock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_first_eta_counts_the_steady_rate_not_the_compilation():
  """As word2vec's loop uses them: blocks of 1% of the work; a 30 s first block (compiling
  window 5), then a 20 s block compiling window 2, then steady blocks: 1 s at window 5,
  0.4 s at window 2."""
  clock, timer = Clock(), StepTimer()
  progress = Progress(100, every=0.0, clock=clock)
  progress.update(0)
  done = 0

  def block(seconds, window):
    nonlocal done
    clock.now += seconds
    done += 1
    if timer.add(seconds, key=window):  # what the loop does after a compiling block
      progress.rebase(done)
    return progress.update(done)

  block(30.0, 5)
  block(20.0, 2)
  for _ in range(3):
    rate = block(1.0, 5)
  assert rate == pytest.approx(1.0)
  assert progress.line(done).endswith("ETA 1m35s")  # 95% left at 1%/s, not 50 s for 2%
  block(0.4, 2)
  block(1.0, 5)
  # Compilation: each window's first block less its own steady time (window 2 is cheaper).
  assert timer.compilation == pytest.approx((30.0 - 1.0) + (20.0 - 0.4))
  assert timer.add(1.0, key=5) is False and timer.add(9.0, key=3) is True


def test_without_rebase_the_first_block_would_dominate():
  # The test above can fail: the old behaviour (no rebase) gives a rate of 4/33.
  clock = Clock()
  progress = Progress(100, every=0.0, clock=clock)
  progress.update(0)
  clock.now += 33.0
  assert progress.update(4) == pytest.approx(4 / 33)


def test_no_progress_line_without_a_rate(caplog):
  clock = Clock()
  progress = Progress(100, every=0.0, clock=clock)
  progress.update(0)
  progress.rebase(0)
  with caplog.at_level("INFO", logger="absl"):
    progress.update(0)  # right after a rebase: nothing measured, no "0 words/s | ETA ?"
    assert "ETA" not in caplog.text
    clock.now += 1.0
    progress.update(1)
    assert "1 words/s" in caplog.text
