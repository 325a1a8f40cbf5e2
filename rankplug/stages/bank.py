"""The previous-stage bank (maths §3): latents with the frozen stage's outputs on them, drawn by critic steps instead
of running the frozen networks; its memory formula (:func:`bank_bytes`) and the memory bound it is checked against.

:class:`PreviousStageBank`, :class:`BankDraw` and :func:`bank_bytes` are public through :mod:`rankplug.stages`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from rankplug._validation import check_choice, check_positive_int

BankKeep = Literal["images", "scores", "both"]
BANK_KEEPS = ("images", "scores", "both")


class BankDraw(NamedTuple):
    """One batch drawn from a :class:`PreviousStageBank`: latents and the frozen stage's outputs on them.

    ``images`` is ``G_{i-1}(z)`` (``None`` unless the bank keeps images), ``scores`` is ``D_{i-1}(G_{i-1}(z))``
    per sample, shape ``(n,)`` (``None`` unless it keeps scores).
    """

    z: Tensor
    images: Tensor | None
    scores: Tensor | None


class PreviousStageBank:
    r"""A bank of latents with the frozen previous stage's outputs on them, so a critic step need not run it.

    During stage ``i`` the frozen ``G_{i-1}`` and ``D_{i-1}`` never change, so their outputs on a latent are
    fixed. The bank draws ``K`` latents once, keeps ``G_{i-1}(z)`` (for RankGAN, whose *current* critic scores
    it, Eq. 4) and/or the frozen critic's score ``D_{i-1}(G_{i-1}(z))`` (for GoGAN, Eq. 4), and a critic step
    draws a batch of rows: the same ``z`` then feeds the live ``G_i``, so each pair of RankGAN Eq. 4

    .. math::
        [\,D_i(G_i(z_k)) - D_i(G_{i-1}(z_k))\,]_+

    and of GoGAN Eq. 4, ``[D_{i-1}(G_{i-1}(z_k)) + 2\epsilon - D_i(x_k)]_+``, is exact: ``G_{i-1}(z_k)`` is what
    the frozen generator returns for that very ``z_k`` (the frozen copy is in eval mode, so a sample does not
    depend on the batch it was made in). Rows are drawn uniformly with replacement from the torch RNG of the
    bank's device (saved with the :class:`~rankplug.StageManager`).

    A :class:`~rankplug.StageManager` built with ``bank=`` owns it: it empties the bank at :meth:`advance`,
    fills it at the first :meth:`~rankplug.StageManager.draw_previous` of a stage (or at
    :meth:`~rankplug.StageManager.fill_bank`), re-draws it every ``refresh_every`` draws, and saves and
    restores it with its checkpoint (per rank under ``torch.distributed``).

    **Memory**: ``K * (prod(latent_shape) + keeps_images * prod(image_shape) + keeps_scores) * bytes`` on
    ``device`` (4 bytes per value in float32); :attr:`nbytes` reports it. ``K = 4096`` costs 1.6 MB for 8x8
    greyscale digits with ``nz = 32`` and 203 MB for 64x64 RGB images with ``nz = 128``; a scores-only bank
    (GoGAN) costs ``K * (prod(latent_shape) + 1)`` values, 2.1 MB for ``nz = 128``. The checkpoint grows by as
    much. A bank that cannot fit in its device's memory (:func:`device_memory`) is refused with a ``ValueError``
    naming the largest ``size`` that fits: at construction for one value per row, and with the real shapes before
    the latents are drawn (:meth:`~rankplug.StageManager.fill_bank`) and before the first outputs are kept
    (:meth:`fill`). **Time**: filling runs the frozen stage on ``K`` latents once, ``ceil(K / fill_batch)``
    forwards, paid again at each refresh.

    Args:
        size: ``K >= 1``, the latents in the bank. A critic step draws its batch from them, so ``K`` should be
            well above the batch size (the critic sees ``G_{i-1}`` only on these ``K`` latents until a refresh).
        keep: ``"images"`` (RankGAN: ``G_{i-1}(z)``), ``"scores"`` (GoGAN: ``D_{i-1}(G_{i-1}(z))``) or ``"both"``.
        device: where the bank lives (``None``: the generator's device): ``"cpu"`` or an accelerator this machine
            has. A CPU bank saves accelerator memory; draws are moved to the generator's device.
        refresh_every: re-draw the whole bank after this many draws (``None``: once per stage).
        fill_batch: latents per frozen forward while filling.

    Shape:
        - Output of :meth:`draw`: :class:`BankDraw` with ``z`` ``(n, *latent_shape)``, ``images``
          ``(n, *image_shape)`` and ``scores`` ``(n,)``.

    Example:
        >>> from rankplug.stages import StageManager
        >>> G, D = torch.nn.Linear(4, 6), torch.nn.Linear(6, 1)
        >>> manager = StageManager(G, D, latent_shape=(4,), bank=PreviousStageBank(64, keep="both"))
        >>> manager.advance()                       # stage 2 against the frozen stage 1
        >>> draw = manager.draw_previous(8)         # fills the bank (64 latents), then draws 8 rows
        >>> draw.z.shape, draw.images.shape, draw.scores.shape
        (torch.Size([8, 4]), torch.Size([8, 6]), torch.Size([8]))
        >>> torch.allclose(draw.images, manager.previous.generator(draw.z))   # the exact pair of Eq. 4
        True
        >>> D(G(draw.z)).mean().backward()          # the live G_2 on the same z
    """

    def __init__(
        self,
        size: int,
        *,
        keep: BankKeep = "images",
        device: str | torch.device | None = None,
        refresh_every: int | None = None,
        fill_batch: int = 256,
    ) -> None:
        self.size = check_positive_int(size, "size")
        self.keep: BankKeep = check_choice(keep, "keep", BANK_KEEPS)  # type: ignore[assignment]
        self.device = check_device(device)
        self.refresh_every = None if refresh_every is None else check_positive_int(refresh_every, "refresh_every")
        self.fill_batch = check_positive_int(fill_batch, "fill_batch")
        self.check_fits()  # one value per row and kept tensor, before the shapes are known
        self.clear()

    @property
    def keeps_images(self) -> bool:
        return self.keep in ("images", "both")

    @property
    def keeps_scores(self) -> bool:
        return self.keep in ("scores", "both")

    def clear(self) -> None:
        """Empty the bank (the frozen stage changed); the next draw fills it again."""
        self.stage: int | None = None  # the stage trained against the outputs held (the frozen one is stage - 1)
        self.z: Tensor | None = None
        self.images: Tensor | None = None
        self.scores: Tensor | None = None
        self.draws = 0  # draws since the last fill
        self.fills = 0  # fills this stage

    @property
    def filled(self) -> bool:
        return self.z is not None

    def due(self, stage: int) -> bool:
        """Whether the next draw at ``stage`` has to fill the bank first (empty, another stage's, or refresh due)."""
        if not self.filled or self.stage != stage:
            return True
        return self.refresh_every is not None and self.draws >= self.refresh_every

    @property
    def nbytes(self) -> int:
        """Bytes held (0 when empty)."""
        return sum(t.numel() * t.element_size() for t in (self.z, self.images, self.scores) if t is not None)

    def fill(
        self,
        stage: int,
        latents: Tensor,
        generator: Callable[[Tensor], Tensor],
        discriminator: Callable[..., Any],
        scores_of: Callable[[Any], Tensor],
        *,
        critic_sees_latents: bool = False,
    ) -> None:
        """Fill with ``latents`` (``K`` rows) and the frozen ``generator``'s (and ``discriminator``'s) outputs.

        ``scores_of`` turns the critic's output into per-sample scores ``(n,)`` (the manager's output selector).
        With ``critic_sees_latents`` the critic is called as ``discriminator(fake, chunk)``, with the latent rows
        that made ``fake``: for latents that carry a label the critic needs too (the StudioGAN and StyleGAN2-ADA
        adapters pack ``[z | c | ...]`` rows).

        Shape:
            - latents: ``(K, *latent_shape)``; ``generator(chunk)``: ``(n, *image_shape)``; ``scores_of(...)``:
              ``(n,)``.
        """
        if latents.shape[0] != self.size:
            raise ValueError(f"latents has {latents.shape[0]} rows; expected the bank size {self.size}")
        images: list[Tensor] = []
        scores: list[Tensor] = []
        with torch.no_grad():
            for index, chunk in enumerate(latents.split(self.fill_batch)):
                fake = generator(chunk)
                if index == 0:  # the image shape is known now, before anything is kept
                    self.check_fits(tuple(latents.shape[1:]), tuple(fake.shape[1:]), self._device(latents))
                if self.keeps_images:
                    images.append(fake.detach().to(self._device(latents)))
                if self.keeps_scores:
                    out = discriminator(fake, chunk) if critic_sees_latents else discriminator(fake)
                    scores.append(scores_of(out).detach().to(self._device(latents)))
        self.z = latents.detach().to(self._device(latents))
        self.images = torch.cat(images) if images else None
        self.scores = torch.cat(scores) if scores else None
        self.stage, self.draws, self.fills = stage, 0, self.fills + 1

    def _device(self, reference: Tensor) -> torch.device:
        return reference.device if self.device is None else self.device

    def check_fits(
        self,
        latent_shape: tuple[int, ...] | None = None,
        image_shape: tuple[int, ...] | None = None,
        device: torch.device | None = None,
    ) -> None:
        """Raise ``ValueError`` unless :func:`bank_bytes` of this bank fits in the memory of its device.

        The device is the bank's own, else ``device`` (the generator's), else the host. A shape that is not known
        yet (``None``) counts one value per row, so the check is a lower bound that can run before anything is
        drawn.

        Example:
            >>> PreviousStageBank(10**15)  # doctest: +ELLIPSIS
            Traceback (most recent call last):
                ...
            ValueError: size must be at most ... on cpu, whatever the shapes (...); got 1000000000000000
        """
        where = self.device if self.device is not None else device
        memory = device_memory(where)
        per_row = bank_bytes(1, latent_shape or (1,), image_shape or (1,), self.keep)
        if memory is None or self.size * per_row <= memory:
            return
        shapes = [f"latents {latent_shape}"] if latent_shape is not None else []
        if image_shape is not None and self.keeps_images:
            shapes.append(f"images {image_shape}")
        what = f"for {' and '.join(shapes)}" if shapes else "whatever the shapes"
        raise ValueError(
            f"size must be at most {memory // per_row} on {where or 'cpu'}, {what} ({self.size} rows take "
            f"{self.size * per_row / 2**30:.3g} GiB of float32, more than its {memory / 2**30:.3g} GiB of memory); "
            f"got {self.size}"
        )

    def draw(self, n: int, device: torch.device) -> BankDraw:
        """``n`` rows drawn uniformly with replacement, moved to ``device``."""
        n = check_positive_int(n, "n")
        if self.z is None:
            raise ValueError("the bank is empty; fill it first (StageManager.fill_bank or draw_previous)")
        return self.take(torch.randint(self.size, (n,), device=self.z.device), device)

    def take(self, rows: Tensor, device: torch.device) -> BankDraw:
        """The bank's rows ``rows`` (a 1-D integer tensor of indices in ``[0, K)``), moved to ``device``; one draw.

        For draws that are not uniform, e.g. rows of a requested class when the latents carry labels
        (``integrations/studiogan.py``).

        Shape:
            - rows: ``(n,)``. Output: :class:`BankDraw` with ``n`` rows.

        Example:
            >>> bank = PreviousStageBank(4, keep="images")
            >>> bank.fill(2, torch.arange(8.0).reshape(4, 2), lambda z: 2 * z, None, lambda s: s)
            >>> bank.take(torch.tensor([3, 3, 0]), torch.device("cpu")).images
            tensor([[12., 14.],
                    [12., 14.],
                    [ 0.,  2.]])
        """
        if self.z is None:
            raise ValueError("the bank is empty; fill it first (StageManager.fill_bank or draw_previous)")
        if not isinstance(rows, Tensor) or rows.dim() != 1 or rows.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"rows must be a 1-D int32 / int64 tensor of row indices; got {rows!r:.80}")
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= self.size):
            raise ValueError(f"rows must lie in [0, {self.size}); got {int(rows.min())}..{int(rows.max())}")
        rows = rows.to(self.z.device)
        self.draws += 1

        def pick(bank: Tensor | None) -> Tensor | None:
            return None if bank is None else bank.index_select(0, rows).to(device, non_blocking=True)

        z = pick(self.z)
        assert z is not None  # the bank is filled
        return BankDraw(z, pick(self.images), pick(self.scores))

    # ------------------------------------------------------------------------------------------------- state
    def tensors(self) -> dict[str, Tensor | None]:
        """The bank's tensors by name (``None`` for what it does not keep)."""
        return {"z": self.z, "images": self.images, "scores": self.scores}

    def settings(self) -> dict[str, Any]:
        return {"size": self.size, "keep": self.keep, "refresh_every": self.refresh_every}

    def snapshot(self) -> tuple[Any, ...]:
        """Everything :meth:`restore` puts back (references: filling and loading replace tensors, never write in them)."""
        return (self.stage, self.z, self.images, self.scores, self.draws, self.fills)

    def restore(self, snapshot: tuple[Any, ...]) -> None:
        self.stage, self.z, self.images, self.scores, self.draws, self.fills = snapshot

    def load(self, stage: int, tensors: dict[str, Tensor | None], draws: int, fills: int) -> None:
        """Put checked tensors back, on the bank's device (or where they were loaded to, for ``device=None``)."""

        def place(tensor: Tensor | None) -> Tensor | None:
            return tensor if tensor is None or self.device is None else tensor.to(self.device)

        self.z, self.images, self.scores = (place(tensors[key]) for key in ("z", "images", "scores"))
        self.stage, self.draws, self.fills = stage, draws, fills

    def __repr__(self) -> str:
        held = f"{self.nbytes / 2**20:.3g} MiB for stage {self.stage}" if self.filled else "empty"
        return (
            f"PreviousStageBank(size={self.size}, keep={self.keep!r}, device={self.device}, "
            f"refresh_every={self.refresh_every}, fill_batch={self.fill_batch}; {held})"
        )


def bank_bytes(size: int, latent_shape: tuple[int, ...], image_shape: tuple[int, ...], keep: BankKeep) -> int:
    r"""The float32 bytes of a bank of ``size`` latents (the memory formula of :class:`PreviousStageBank`).

    .. math::
        4 K \big(\textstyle\prod \text{latent\_shape} + [\text{keeps images}] \prod \text{image\_shape}
        + [\text{keeps scores}]\big)

    Example:
        >>> bank_bytes(4096, (32,), (1, 8, 8), "images")   # 4096 * (32 + 64) * 4
        1572864
    """
    values = math.prod(latent_shape) + (math.prod(image_shape) if keep != "scores" else 0) + (keep != "images")
    return 4 * size * values


def device_memory(device: torch.device | None) -> int | None:
    """Bytes of memory ``device`` has (``None``: the host), or ``None`` where that cannot be told.

    The host's physical memory (``os.sysconf``), or a CUDA device's total memory (``torch.cuda.mem_get_info``): a
    bank larger than that can never be allocated there, whatever else runs.
    """
    if device is None or device.type == "cpu":
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):  # not POSIX
            return None
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[1])
    return None


def check_device(device: object, name: str = "device") -> torch.device | None:
    """``device`` as a ``torch.device`` (``None`` stays ``None``); a ``ValueError`` naming ``name`` unless this machine
    has it (CUDA with enough devices for the index, or the backend's ``is_available()``).

    Example:
        >>> check_device("cpu")
        device(type='cpu')
        >>> check_device("foo", "RANKPLUG_BANK_DEVICE")
        Traceback (most recent call last):
        ...
        ValueError: RANKPLUG_BANK_DEVICE must be None or a device such as 'cpu', 'cuda' or 'cuda:0'; got 'foo'
    """
    if device is None:
        return None
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"{name} must be None, a str or a torch.device; got {type(device).__name__}")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"{name} must be None or a device such as 'cpu', 'cuda' or 'cuda:0'; got {device!r}") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"{name} must be None, 'cpu' or an available device; got {device!r}, and CUDA is not available"
            )
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(
                f"{name} must be None, 'cpu' or one of the {count} CUDA device(s) cuda:0 to cuda:{count - 1}; "
                f"got {device!r}"
            )
        return parsed
    backend = torch.backends.mps if parsed.type == "mps" else getattr(torch, parsed.type, None)
    available = getattr(backend, "is_available", None)
    if callable(available) and not available():
        raise ValueError(f"{name} must be None, 'cpu' or an available device; got {device!r}, which is not available")
    return parsed


__all__ = ["BANK_KEEPS", "BankDraw", "BankKeep", "PreviousStageBank", "bank_bytes", "check_device", "device_memory"]
