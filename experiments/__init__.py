"""The paper's experiments at small scale on real data (Fashion-MNIST): ``python -m experiments``."""
