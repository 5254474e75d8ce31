"""`word2vec ACTION --flags` / `python -m tf_embeddings.word2vec ACTION --flags`."""
# pylint: disable=wrong-import-position
from tf_embeddings.training import app as app_lib

app_lib.use_xla_compile_cache()

from tf_embeddings.word2vec import app


def run():
  app_lib.run_and_exit(app.run)


if __name__ == "__main__":
  run()
