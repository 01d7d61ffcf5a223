"""Trivial baselines that measure how hard a dataset is: if they score well, it is too easy."""
