"""Small real datasets used by the quick start and the tests."""
from .mnist_generation import MNISTGeneration

__all__ = ['MNISTGeneration']
