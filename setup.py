"""Installable package: console scripts `word2vec` and `twotower`."""
from setuptools import find_packages, setup

setup(
    name="tf-embeddings",
    version="0.1.0",
    description="word2vec and two-tower retrieval embeddings with TensorFlow 2",
    license="Apache-2.0",
    classifiers=["License :: OSI Approved :: Apache Software License"],
    python_requires=">=3.10",
    packages=find_packages(include=["flags", "data", "data.*", "losses", "training",
                                    "word2vec", "twotower"]),
    package_data={
        "data": ["corpora/*.gz", "evalsets/*.txt"],
        "flags": ["*.cfg"],
    },
    include_package_data=True,
    install_requires=[
        "tensorflow>=2.16",
        "numpy",
        "absl-py",
        "tensorboard",
    ],
    extras_require={
        "test": ["pytest", "gensim==4.4.0", "scipy"],
        "bench": ["gensim==4.4.0", "scipy"],
    },
    entry_points={
        "console_scripts": [
            "word2vec=word2vec.__main__:run",
            "twotower=twotower.__main__:run",
        ],
    },
)
