"""`twotower ACTION --flags` / `python -m tf_embeddings.twotower ACTION --flags`."""
from tf_embeddings.twotower import app


def run():
  app.run()


if __name__ == "__main__":
  run()
