"""glancing: GLANCE (Wang et al., CVPR 2021) anomaly localization, explained and reproduced."""

__version__ = "0.1.0"
