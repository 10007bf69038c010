"""Vocabulary shared by every layer: settings, errors, wire contracts, clock.

Nothing in here imports from another ``maasbase`` package.
"""
