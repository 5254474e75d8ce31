"""Shared pytest setup: quiet TensorFlow, offline cache.

The code under test is the installed `tf_embeddings` package (`pip install -e .`), never the
repository folders put on sys.path.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
