"""Installable package `tf_embeddings`: console scripts `word2vec` and `twotower`.

The repository keeps its folders at the top (word2vec/, twotower/, data/, ...); installed they
are `tf_embeddings.word2vec`, `tf_embeddings.data`, ... (package_dir maps one to the other, for
`pip install .` and `pip install -e .` alike), so they never clash with PyPI packages or a
user's own `data.py`.
"""
from setuptools import find_packages, setup

FOLDERS = find_packages(include=["flags", "data", "data.*", "losses", "training", "word2vec",
                                 "twotower"])
PACKAGES = {f"tf_embeddings.{name}": name.replace(".", "/") for name in FOLDERS}

setup(
    name="tf-embeddings",
    version="0.1.0",
    description="word2vec and two-tower retrieval embeddings with TensorFlow 2",
    license="Apache-2.0",
    classifiers=["License :: OSI Approved :: Apache Software License"],
    python_requires=">=3.10",
    packages=list(PACKAGES),
    package_dir=PACKAGES,
    package_data={
        "tf_embeddings.data": ["corpora/*.gz", "evalsets/*.txt"],
        "tf_embeddings.flags": ["*.cfg"],
    },
    include_package_data=True,
    install_requires=[
        "tensorflow>=2.16",
        "numpy",
        "absl-py",
        "tensorboard",
    ],
    extras_require={
        "test": ["pytest", "pytest-xdist", "gensim==4.4.0", "scipy"],
        "bench": ["gensim==4.4.0", "scipy"],
    },
    entry_points={
        "console_scripts": [
            "word2vec=tf_embeddings.word2vec.__main__:run",
            "twotower=tf_embeddings.twotower.__main__:run",
        ],
    },
)
