"""The networks of GLANCE, each in its own module.

- :mod:`~glancing.models.local_net`: the Local-Net L and its distillation decoder D.
- :mod:`~glancing.models.partial_conv`: partial convolution (Liu et al., ECCV 2018).
- :mod:`~glancing.models.global_net`: the Global-Net G, built from partial convolutions.
"""
