"""`twotower ACTION --flags` / `python -m tf_embeddings.twotower ACTION --flags`."""
from tf_embeddings.training import app as app_lib
from tf_embeddings.twotower import app


def run():
  app_lib.run_and_exit(app.run)


if __name__ == "__main__":
  run()
