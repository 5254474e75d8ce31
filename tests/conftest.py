"""Shared pytest setup: quiet TensorFlow, offline cache, Ctrl-C deliverable to children.

The code under test is the installed `tf_embeddings` package (`pip install -e .`), never the
repository folders put on sys.path.
"""
import os
import signal

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# A test run started in the background by a non-interactive shell (`cmd &`) inherits SIGINT
# ignored, and so would every process the tests start: their Ctrl-C tests (SIGINT sent to
# a chief) would test nothing and hang. A handler of ours is reset to the default in
# children at exec (an ignored signal stays ignored), so Python there installs its own.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
  signal.signal(signal.SIGINT, signal.default_int_handler)


# The suite runs on two processes (`pytest -n 2`, pytest-xdist, --dist=loadgroup in
# pytest.ini). The cluster tests start processes on loopback ports and time their kills by
# log lines: they run one at a time, on one worker ("cluster" group). A module with a
# module-scoped fixture (a trained run its tests read) keeps its tests on one worker, so
# the fixture is built once; the other tests go wherever a worker is free.
_CLUSTER_MODULES = ("test_distribute.py", "test_multi_worker.py")


def pytest_collection_modifyitems(config, items):  # pylint: disable=unused-argument
  for item in items:
    name = item.path.name
    if name in _CLUSTER_MODULES:
      item.add_marker(pytest.mark.xdist_group("cluster"))
      continue
    defs = getattr(item, "_fixtureinfo", None)
    shared = defs is not None and any(
        d.scope == "module" for fixturedefs in defs.name2fixturedefs.values()
        for d in fixturedefs)
    if shared:
      item.add_marker(pytest.mark.xdist_group(name))
