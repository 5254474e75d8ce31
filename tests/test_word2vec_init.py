"""The chunked initialisation of word2vec's input table against the one-shot op it replaces."""
import numpy as np
import pytest
import tensorflow as tf

from tf_embeddings.word2vec import model as model_lib


@pytest.mark.parametrize("rows, dim, chunk, seed", [
    (37, 100, 4, [0, 1]),      # many chunks, the last one short
    (33, 7, 8, [5, 1]),        # odd dim: chunks start at flat indices 56, 112, ...
    (10, 3, 4, [123456789, 1]),
    (5, 300, 64, [2, 1]),      # one chunk bigger than the table
])
def test_chunked_fill_has_the_bits_of_stateless_uniform(rows, dim, chunk, seed):
  half = 0.5 / dim
  expected = tf.random.stateless_uniform([rows, dim], seed, -half, half).numpy()
  table = tf.Variable(tf.zeros([rows, dim]))
  model_lib.fill_stateless_uniform(table, seed, -half, half, chunk_rows=chunk)
  got = table.numpy()
  np.testing.assert_array_equal(got.view(np.int32), expected.view(np.int32))
  assert np.all(np.abs(got) <= half) and np.std(got) > 0


def test_chunk_rows_must_keep_chunks_on_counter_steps():
  table = tf.Variable(tf.zeros([8, 3]))
  with pytest.raises(ValueError, match="multiple of 4"):
    model_lib.fill_stateless_uniform(table, [0, 1], -1.0, 1.0, chunk_rows=6)


def test_model_tables_start_as_word2vec_c_and_as_before():
  # The input table is what the one-shot op gave before (so runs are unchanged), uniform in
  # +-0.5/dim as word2vec.c; the output table and biases start at zero.
  config = model_lib.StepConfig(
      model="skipgram", loss="nce", vocab_size=1001, dim=13, window=2, batch_size=8,
      steps_per_call=1, num_sampled=2, group_size=4, sampler="uniform", distortion=0.75,
      subtract_log_q=False, remove_accidental_hits=True, train_biases=False,
      row_update="bounded")
  model = model_lib.Word2Vec(config, seed=3)
  half = 0.5 / 13
  expected = tf.random.stateless_uniform([1001, 13], [3, 1], -half, half).numpy()
  np.testing.assert_array_equal(model.input_embeddings.numpy(), expected)
  assert not np.any(model.output_embeddings.numpy()) and not np.any(model.output_biases.numpy())


def _tiny_config(vocab_size=1001, dim=13):
  return model_lib.StepConfig(
      model="skipgram", loss="nce", vocab_size=vocab_size, dim=dim, window=2, batch_size=8,
      steps_per_call=1, num_sampled=2, group_size=4, sampler="uniform", distortion=0.75,
      subtract_log_q=False, remove_accidental_hits=True, train_biases=False,
      row_update="bounded")


def test_model_built_from_a_checkpoint_holds_its_tables(tmp_path):
  # The resume / eval path reads the tables from disk into the new model's variables (one
  # copy each) instead of initialising and then restoring; the values must be the saved ones.
  trained = model_lib.Word2Vec(_tiny_config(), seed=1)
  trained.output_embeddings.assign(tf.random.stateless_normal([1001, 13], [9, 9]))
  trained.output_biases.assign(tf.range(1001, dtype=tf.float32))
  ckpt, _ = model_lib.make_checkpoint(trained)
  path = ckpt.write(str(tmp_path / "ckpt"))
  restored = model_lib.Word2Vec(_tiny_config(), seed=2, tables=model_lib.read_tables(path))
  for name in model_lib.TABLES:
    np.testing.assert_array_equal(getattr(restored, name).numpy(),
                                  getattr(trained, name).numpy())
  with pytest.raises(ValueError, match="input_embeddings has shape"):
    model_lib.Word2Vec(_tiny_config(vocab_size=1000), tables=model_lib.read_tables(path))


def test_tables_of_a_spread_layout_read_back_in_id_order(tmp_path):
  """A parameter-server run writes its tables in a spread layout (row = id x a mod V) and
  says so in the checkpoint; one process reads them back in id order. A checkpoint written
  before the layout existed (no table_layout) is read as row = id."""
  layout = model_lib.RowLayout.spread(1001)
  spread = model_lib.Word2Vec(_tiny_config(), seed=1, layout=layout)
  by_id = {"input_embeddings": np.random.default_rng(0).normal(size=[1001, 13]),
           "output_embeddings": np.random.default_rng(1).normal(size=[1001, 13]),
           "output_biases": np.arange(1001.0)}
  at = layout.rows_np(np.arange(1001))
  for name, value in by_id.items():
    placed = np.empty_like(value)
    placed[at] = value
    getattr(spread, name).assign(placed)
  ckpt, _ = model_lib.make_checkpoint(spread)
  path = ckpt.write(str(tmp_path / "spread"))
  assert model_lib.checkpoint_layout(path, 1001).multiplier == layout.multiplier
  tables = model_lib.read_tables(path)
  for name, value in by_id.items():
    np.testing.assert_allclose(tables[name].numpy(), value, rtol=1e-6)
  old = tf.train.Checkpoint(**{name: getattr(spread, name) for name in model_lib.TABLES})
  path = old.write(str(tmp_path / "old"))
  assert model_lib.checkpoint_layout(path, 1001).identity
  np.testing.assert_array_equal(model_lib.read_tables(path)["output_biases"].numpy(),
                                spread.output_biases.numpy())
