"""Shared pytest setup: quiet TensorFlow, offline cache, Ctrl-C deliverable to children.

The code under test is the installed `tf_embeddings` package (`pip install -e .`), never the
repository folders put on sys.path.
"""
import os
import signal

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# A test run started in the background by a non-interactive shell (`cmd &`) inherits SIGINT
# ignored, and so would every process the tests start: their Ctrl-C tests (SIGINT sent to
# a chief) would test nothing and hang. A handler of ours is reset to the default in
# children at exec (an ignored signal stays ignored), so Python there installs its own.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
  signal.signal(signal.SIGINT, signal.default_int_handler)
