"""Adapters that fit rankplug into existing GAN codebases, installed as :mod:`rankplug.integrations`.

The adapters (pytorch/examples DCGAN, yunjey/stargan, NVlabs/stylegan2-ada-pytorch) arrive as submodules
``rankplug.integrations.dcgan``, ``.stargan`` and ``.stylegan2_ada``. They depend on the core; the core never
imports them, and none imports upstream code at import time.
"""

__all__: list[str] = []
