"""`word2vec ACTION --flags` / `python -m word2vec ACTION --flags`."""
from word2vec import app


def run():
  app.run()


if __name__ == "__main__":
  run()
