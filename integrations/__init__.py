"""Adapters that fit rankplug into existing GAN codebases, installed as :mod:`rankplug.integrations`.

The adapters (pytorch/examples DCGAN, yunjey/stargan, NVlabs/stylegan2-ada-pytorch, POSTECH-CVLab/PyTorch-StudioGAN)
arrive as submodules ``rankplug.integrations.dcgan``, ``.stargan``, ``.stylegan2_ada`` (with its launcher,
``python -m rankplug.integrations.stylegan2_ada_launch``) and ``.studiogan``. They depend on the core; the core
never imports them, and none imports upstream code at import time.
"""

__all__: list[str] = []
