"""Analyses behind the paper's claims (resolution sweeps, reproductions).

Imports mmpretrain / matplotlib lazily, inside the functions that need them.
"""
