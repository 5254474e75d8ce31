"""Ctrl-C in the middle of a two-tower run, for the resume tests (not a test module)."""


def interrupt_second_epoch(monkeypatch, inputs, batches):
  """Patches `inputs.epoch_dataset` so that the second epoch (epoch 1) raises
  KeyboardInterrupt when its batch number `batches` (0-based) is requested, i.e. after
  `batches` steps of that epoch, as Ctrl-C would.

  Returns:
    the real `epoch_dataset`, to put back with monkeypatch.setattr before resuming.
  """
  real = inputs.epoch_dataset

  def dies_in_epoch_2(train, batch_size, epoch, seed, skip_batches=0, drop_remainder=True):
    ds = real(train, batch_size, epoch, seed, skip_batches, drop_remainder)
    if epoch == 1:
      def killed():
        for k, b in enumerate(ds):
          if k == batches:
            raise KeyboardInterrupt
          yield b
      return killed()
    return ds

  monkeypatch.setattr(inputs, "epoch_dataset", dies_in_epoch_2)
  return real
