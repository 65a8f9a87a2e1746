"""Losses of the official recipes that mmpretrain's losses cannot express."""
from .binarized_bce_loss import BinarizedBCELoss

__all__ = ['BinarizedBCELoss']
