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
