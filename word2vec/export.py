"""`word2vec export`: a run's embeddings in the formats of data/embedding_formats.py.

Built from the run directory's saved state only (config.json, vocab.tsv and the last
checkpoint, model.restore): the corpus is never read again, and the trainer is not needed.
"""
import os

import tensorflow as tf
from absl import logging

from tf_embeddings.data import atomic
from tf_embeddings.data import embedding_formats
from tf_embeddings.data.errors import UserError
from tf_embeddings.word2vec import model as model_lib

# What each export format writes: one file, or a directory holding exactly these names.
EXPORT_DIRECTORIES = {"projector": ("vectors.tsv", "metadata.tsv", "projector_config.pbtxt"),
                      "npy": ("vectors.npy", "vocab.txt")}


def export(model_dir, fmt, output, overwrite):
  """Writes the input vectors of the run in model_dir to output as fmt.

  Args:
    model_dir: the run directory.
    fmt: one of flags/word2vec_flags.py EXPORT_FORMATS: word2vec (text), word2vec_binary,
      projector (a directory: vectors.tsv, metadata.tsv, projector_config.pbtxt), npy (a
      directory: vectors.npy, vocab.txt).
    output: the file or directory to write.
    overwrite: replace an existing output, as a whole (data/atomic.py); never one that is,
      contains or is inside the run directory.
  """
  if not output:
    raise UserError("export needs --output=<file or directory>")
  owned = EXPORT_DIRECTORIES.get(fmt)
  directory = owned is not None
  # Refused before the (slow) restore; replace_output checks again before renaming.
  atomic.check_output(output.rstrip(os.sep), overwrite, directory, model_dir, owned)
  _, vocab, latest = model_lib.saved_run(model_dir)
  # Only the input table, read from the checkpoint into numpy (no model, one copy of the
  # table; a tensor's .numpy() copied it: a 1.2 GB table peaked at 3.1 GB, now 1.9 GB).
  table = tf.train.load_checkpoint(latest).get_tensor(
      model_lib.checkpoint_key("input_embeddings"))
  if table.shape[0] != len(vocab):
    raise UserError(f"--model_dir={model_dir}: its checkpoint has {table.shape[0]} rows but "
                    f"vocab.tsv {len(vocab)} words: the run directory was changed by hand; "
                    "retrain it")
  # Trained on parameter servers: the rows put back in id order.
  table = model_lib.checkpoint_layout(latest, len(vocab)).to_ids(table)
  # Rows by descending frequency; UNK (id 0, never trained) is left out.
  words, vectors = vocab.words[1:], table[1:]

  def build(path):
    if fmt == "word2vec":
      embedding_formats.save_word2vec_text(path, words, vectors)
    elif fmt == "word2vec_binary":
      embedding_formats.save_word2vec_binary(path, words, vectors)
    elif fmt == "projector":
      embedding_formats.save_projector(path, words, vectors, counts=vocab.counts[1:])
    else:
      embedding_formats.save_npy(path + os.sep, words, vectors)

  atomic.replace_output(output, build, directory, overwrite, model_dir, owned)
  logging.info("wrote %d vectors of dim %d as %s to %s", len(words), vectors.shape[1], fmt,
               output)
