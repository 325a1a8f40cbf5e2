"""Pictures, plots and the facts recorded with every result: sample grids, the score ladder, machine info.

Plain helpers with no training logic; the demo's report (:mod:`rankplug.app.demo`) and the evaluation
(:mod:`rankplug.app.eval.commands`) use them. matplotlib and Pillow are imported when a picture is made.
"""

from __future__ import annotations

import math
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str | torch.device | None = None) -> dict[str, Any]:
    """What decides what a result or a timing means: Python, torch, CPU, cores, threads, load, GPU, date.

    Recorded with every result (runs, the demo, experiments, benchmarks); ``device`` adds its name and, for a
    CUDA device, the GPU and the CUDA version.
    """
    import os

    try:
        load: list[float] | None = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": load,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    if device is not None:
        parsed = torch.device(device)
        info["device"] = str(parsed)
        if parsed.type == "cuda":
            info["gpu"], info["cuda_version"] = torch.cuda.get_device_name(parsed), torch.version.cuda
    return info


def save_grid(images: Tensor, path: str | Path, *, nrow: int = 8, scale: int = 3) -> Path:
    """Write ``images`` in ``[-1, 1]``, ``(N, C, H, W)`` with ``C`` 1 or 3, as one PNG grid (PIL), ``scale``-fold."""
    from PIL import Image

    images = images.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    n, c, h, w = images.shape
    rows = math.ceil(n / nrow)
    pad = 1
    canvas = torch.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), 64, dtype=torch.uint8)
    for k in range(n):
        r, col = divmod(k, nrow)
        canvas[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = (
            images[k]
        )
    array = canvas.permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[:, :, 0] if c == 1 else array, mode="L" if c == 1 else "RGB")
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    path = Path(path)
    picture.save(path)
    return path


def save_labelled_rows(rows: list[tuple[str, Tensor]], path: str | Path, *, scale: int = 4) -> Path:
    """Write one labelled row of images per ``(label, images)`` as a PNG (PIL): the label at the left, then the
    images of the row side by side, each enlarged ``scale``-fold.

    Shape:
        - images of each row: ``(n, C, H, W)`` in ``[-1, 1]``, ``C`` 1 or 3, the same ``H, W`` in every row.
    """
    from PIL import Image, ImageDraw

    strips = []
    for _, images in rows:
        pixels = images.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
        n, _, h, w = pixels.shape
        band = torch.full((3, h + 2, n * (w + 2)), 64, dtype=torch.uint8)
        for k in range(n):
            band[:, 1 : 1 + h, k * (w + 2) + 1 : k * (w + 2) + 1 + w] = pixels[k].expand(3, h, w)
        picture = Image.fromarray(band.permute(1, 2, 0).numpy(), mode="RGB")
        strips.append(picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST))
    label_width = 8 + 7 * max(len(label) for label, _ in rows)
    canvas = Image.new("RGB", (label_width + max(s.width for s in strips), sum(s.height for s in strips)), "white")
    draw = ImageDraw.Draw(canvas)
    top = 0
    for (label, _), strip in zip(rows, strips):
        canvas.paste(strip, (label_width, top))
        draw.text((4, top + strip.height // 2 - 5), label, fill="black")
        top += strip.height
    path = Path(path)
    canvas.save(path)
    return path


def plot_score_ladder(results: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """The score ladder (RankGAN Fig. 4) and the gap per stage of each run, as one PNG (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(11, 3.4 * len(results)), squeeze=False)
    for row, (name, result) in enumerate(results.items()):
        ladder, gap_axis = axes[row]
        every = result["config"]["log_every"]
        offset = 0
        for entry in result["stages"]:
            steps = [offset + every * (k + 1) for k in range(len(entry["real"]))]
            first = entry["stage"] == 1
            ladder.plot(steps, entry["real"], color="tab:blue", label="D(x)" if first else None)
            ladder.plot(steps, entry["fake"], color="tab:red", label="D(G_i(z))" if first else None)
            if entry["prev_fake"]:
                ladder.plot(
                    steps, entry["prev_fake"], color="tab:gray", label="D(G_{i-1}(z))" if entry["stage"] == 2 else None
                )
            gap_axis.plot(steps, entry["gap"], label=f"stage {entry['stage']}")
            offset = steps[-1] if steps else offset
            for axis in (ladder, gap_axis):
                axis.axvline(offset, color="k", lw=0.5, ls=":")
        method = result["method"]
        ladder.set_title(f"{name} ({method}): score ladder")
        ladder.set_xlabel("generator step")
        ladder.set_ylabel("critic score (batch mean)")
        ladder.legend(fontsize=8)
        gap_axis.set_title(f"{name}: gap Γ = mean D(x) - mean D(G(z))")
        gap_axis.set_xlabel("generator step")
        gap_axis.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def gap_summary(entry: dict[str, Any]) -> dict[str, Any]:
    gaps = entry["gap"]
    tail = gaps[-5:]
    return {
        "stage": entry["stage"],
        "gap_end": float(sum(tail) / len(tail)) if tail else None,
        "gap_mean": float(sum(gaps) / len(gaps)) if gaps else None,
        "real_end": entry["real"][-1] if entry["real"] else None,
        "fake_end": entry["fake"][-1] if entry["fake"] else None,
        "prev_fake_end": entry["prev_fake"][-1] if entry["prev_fake"] else None,
    }


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def mean(values: Any) -> float:
    """The mean of a non-empty sequence of numbers, as a float."""
    values = list(values)
    return float(sum(values) / len(values))


def mean_std(values: Any, digits: int = 2, *, factor: float = 1.0) -> str:
    """``"mean ± sample std"`` of ``values`` scaled by ``factor``, or the single value when there is one.

    Example:
        >>> mean_std([1.0, 2.0, 3.0])
        '2.00 ± 1.00'
    """
    import statistics

    scaled = [float(v) * factor for v in values]
    if len(scaled) == 1:
        return f"{scaled[0]:.{digits}f}"
    return f"{statistics.fmean(scaled):.{digits}f} ± {statistics.stdev(scaled):.{digits}f}"


__all__ = ["cpu_model", "fmt", "gap_summary", "machine_info", "mean", "mean_std", "plot_score_ladder", "save_grid"]
