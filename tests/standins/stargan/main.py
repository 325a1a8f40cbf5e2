"""Stand-in for yunjey/stargan's ``main.py``: parse the options, build the loaders and the ``Solver``, train or test.

Written from scratch with upstream's entry points (``from solver import Solver``, ``from data_loader import
get_loader``, ``solver = Solver(celeba_loader, rafd_loader, config)``, ``solver.train()`` / ``train_multi()`` /
``test()``) and option names. Run it as upstream's, ``python main.py --dataset RaFD ...``, from this folder, with
rankplug's repository on ``PYTHONPATH`` (the stand-in's modules import ``tests.standins.stargan``). The loaders
are synthetic and in memory; the defaults are :func:`tests.standins.stargan.data_loader.tiny_config`'s sizes.
"""

# Upstream's import lines in upstream's order: rankplug's documented diff has them as context.
import argparse  # noqa: I001
import os
from solver import Solver
from data_loader import get_loader
from torch.backends import cudnn

from data_loader import tiny_config


def main(config: argparse.Namespace) -> None:
    cudnn.benchmark = True
    for folder in (config.log_dir, config.model_save_dir, config.sample_dir, config.result_dir):
        os.makedirs(folder, exist_ok=True)
    celeba_loader = rafd_loader = None
    if config.dataset in ("CelebA", "Both"):
        celeba_loader = get_loader(None, None, config.selected_attrs, None, config.image_size, config.batch_size,
                                   "CelebA", config.mode, config.num_workers)  # fmt: skip
    if config.dataset in ("RaFD", "Both"):
        rafd_loader = get_loader(None, None, None, None, config.image_size, config.batch_size,
                                 "RaFD", config.mode, config.num_workers)  # fmt: skip

    # Solver for training and testing StarGAN.
    solver = Solver(celeba_loader, rafd_loader, config)

    if config.mode == "train":
        if config.dataset in ("CelebA", "RaFD"):
            solver.train()
        else:
            solver.train_multi()
    else:
        solver.test()


if __name__ == "__main__":
    defaults = vars(tiny_config())
    parser = argparse.ArgumentParser()
    for name, value in defaults.items():
        if isinstance(value, bool):
            parser.add_argument(f"--{name}", type=lambda text: text.lower() == "true", default=value)
        elif isinstance(value, list):
            parser.add_argument(f"--{name}", nargs="+", default=value)
        elif value is None:
            parser.add_argument(f"--{name}", type=int if name.endswith("iters") else str, default=None)
        else:
            parser.add_argument(f"--{name}", type=type(value), default=value)
    config = parser.parse_args()
    if config.dataset == "RaFD":
        config.c_dim = 8  # upstream's users pass --c_dim 8 for RaFD; the stand-in sets it
    print(config)
    main(config)
