"""A FID Inception weights file built here: the real file's keys and shapes, seeded random values.

The real ``pt_inception-2015-12-05-6726825d.pth`` cannot be downloaded on the development machines. torchvision's
``Inception3`` with 1008 classes and no auxiliary head has exactly its parameter names and shapes (the FID blocks
of pytorch-fid and torch-fidelity change the pooling, not the parameters), so its state dict
loads strictly into torch-fidelity's ``FeatureExtractorInceptionV3``. Numbers computed with it are not
comparable with any paper's: the network was never trained.
"""

from __future__ import annotations

from pathlib import Path

import torch


def write_random_fid_inception(path: Path, seed: int = 0) -> Path:
    """Write the state dict to ``path`` and return it (same ``seed``, same bytes' values)."""
    from torchvision.models import inception_v3

    torch.manual_seed(seed)
    net = inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    for module in net.modules():
        # He initialisation keeps activations at unit scale through the ~40 conv layers; PyTorch's default
        # would shrink them by ~1/6 per layer until every feature is ~0 and all distances look alike.
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        elif isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=0.05)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


if __name__ == "__main__":  # python -m tests._fid_weights OUT.pth: the file the issue-16 digits run used
    import sys

    print(write_random_fid_inception(Path(sys.argv[1])))
