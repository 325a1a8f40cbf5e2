"""Stage handling for RankGAN and GoGAN (MATH §2-§4): frozen snapshots, markers, latents, crash-safe resume."""

from __future__ import annotations

import contextlib
import copy
import random
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn

from rankplug._checkpoint import CheckpointError, atomic_save, safe_load
from rankplug._validation import check_choice, check_nonnegative, check_positive_int, per_sample_scores
from rankplug.functional.penalty import OutputSelector, select_scores

CHECKPOINT_NAME = "stage_manager.pt"
FORMAT_VERSION = 1


class Stateful(Protocol):
    """Anything with ``state_dict()`` / ``load_state_dict()``: optimizers, ``GradScaler``, EMA helpers."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state_dict: Any) -> Any: ...


def unwrap(module: nn.Module) -> nn.Module:
    """The user's module inside ``DistributedDataParallel``, ``DataParallel`` or ``torch.compile`` wrappers."""
    while True:
        if isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            module = module.module
        elif hasattr(module, "_orig_mod") and isinstance(module._orig_mod, nn.Module):
            module = module._orig_mod
        else:
            return module


class _StayInEval:
    """A frozen module's ``train``: a parent's ``.train(True)`` leaves BatchNorm statistics and dropout in eval mode.

    A small class rather than a closure, so frozen copies still deep-copy and pickle correctly.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, mode: bool = True) -> nn.Module:
        nn.Module.train(self.module, False)
        return self.module


class _NoGradForward:
    """A frozen module's ``forward``: the class's own forward under ``torch.no_grad()``."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return type(self.module).forward(self.module, *args, **kwargs)


def _freeze_in_place(module: nn.Module) -> None:
    for sub in module.modules():
        object.__setattr__(sub, "train", _StayInEval(sub))
        # Every submodule, not only the top: hosts call parts directly (StyleGAN's G.mapping, G.synthesis).
        object.__setattr__(sub, "forward", _NoGradForward(sub))
    nn.Module.train(module, False)
    for parameter in module.parameters():
        parameter.requires_grad_(False)


@contextlib.contextmanager
def use_batch_statistics(module: nn.Module) -> Iterator[nn.Module]:
    """Run ``module``'s BatchNorm layers on the statistics of each batch, leaving their running statistics alone.

    Inside the block a BatchNorm layer normalises with the batch's own mean and variance, as in train mode, but
    its running statistics are neither used nor updated (they are set aside and put back afterwards). Other
    layers keep their mode, so dropout stays off in a frozen copy.
    """
    saved = []
    for sub in module.modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm) and sub.running_mean is not None:
            saved.append((sub, sub.running_mean, sub.running_var))
            sub.running_mean = None
            sub.running_var = None
    try:
        yield module
    finally:
        for sub, mean, var in saved:
            sub.running_mean = mean
            sub.running_var = var


def freeze(module: nn.Module) -> nn.Module:
    """A frozen deep copy of ``module`` (unwrapped first).

    The copy is in eval mode and stays there when a parent calls ``.train()``; its parameters have
    ``requires_grad=False``; its forward, and that of every submodule, runs under ``torch.no_grad()``, so it
    builds no autograd graph and its BatchNorm running statistics never change. Updating ``module`` never
    changes the copy.
    """
    frozen = copy.deepcopy(unwrap(module))
    _freeze_in_place(frozen)
    return frozen


@dataclass
class FrozenStage:
    """The frozen networks of one finished stage."""

    stage: int
    generator: nn.Module
    discriminator: nn.Module
    ema_generator: nn.Module | None = None

    def modules(self) -> dict[str, nn.Module]:
        out = {"generator": self.generator, "discriminator": self.discriminator}
        if self.ema_generator is not None:
            out["ema_generator"] = self.ema_generator
        return out


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _gather_all(values: Tensor) -> Tensor:
    """Concatenate 1-D tensors of possibly different lengths from every rank (same result on every rank)."""
    if _world() == 1:
        return values
    length = torch.tensor([values.numel()], device=values.device, dtype=torch.long)
    lengths = [torch.zeros_like(length) for _ in range(_world())]
    dist.all_gather(lengths, length)
    longest = int(max(int(n.item()) for n in lengths))
    padded = torch.zeros(longest, device=values.device, dtype=values.dtype)
    padded[: values.numel()] = values
    chunks = [torch.zeros_like(padded) for _ in range(_world())]
    dist.all_gather(chunks, padded)
    return torch.cat([chunk[: int(n.item())] for chunk, n in zip(chunks, lengths)])


def marker_statistics(
    real_scores: Tensor,
    fake_scores: Tensor,
    *,
    statistic: Literal["mean", "median"] = "mean",
) -> tuple[float, float]:
    """``(m_high, m_low)`` of RankGAN Eq. 6 from per-sample scores, over every rank under ``torch.distributed``.

    Each rank passes its own scores (lengths may differ between ranks); every rank gets the statistic of the
    union. ``"median"`` is the usual median (the mean of the two middle values for an even count).

    Shape:
        - real_scores, fake_scores: ``(N,)`` per rank. Output: two floats.
    """
    statistic = check_choice(statistic, "statistic", ("mean", "median"))  # type: ignore[assignment]
    real = _gather_all(real_scores.detach().flatten().double())
    fake = _gather_all(fake_scores.detach().flatten().double())
    if real.numel() == 0 or fake.numel() == 0:
        raise ValueError("markers need at least one real and one fake score; got none")
    if statistic == "mean":
        return float(real.mean()), float(fake.mean())
    return float(torch.quantile(real, 0.5)), float(torch.quantile(fake, 0.5))


def _broadcast_module(module: nn.Module) -> None:
    if _world() == 1:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np
    except ImportError:  # numpy is optional
        pass
    else:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = [kind, torch.from_numpy(np.array(keys)), int(pos), int(has_gauss), float(cached)]
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        try:
            import numpy as np
        except ImportError:
            return
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


class StageManager:
    r"""Stages for RankGAN and GoGAN: frozen snapshots, markers, encoder latents and crash-safe resume.

    Stage ``i`` trains the live ``generator`` / ``discriminator`` against a frozen copy of stage ``i - 1``
    (RankGAN Algorithm 1, GoGAN Sec. 3). The manager

    - snapshots and freezes the previous stage on :meth:`advance` while **the live modules keep training in
      place**, so the user's optimizers keep working;
    - keeps only the immediately previous stage in memory (older ones go to ``directory`` when given), so memory
      is flat in the number of stages;
    - computes RankGAN's markers ``m_high = E[D_{i-1}(x)]`` and ``m_low = E[D_{i-1}(G_{i-1}(z))]`` (Eq. 6) with
      the frozen previous stage, over all ranks under ``torch.distributed``;
    - draws latents ``z ~ N(0, I)``, or ``z ~ N(mu(x), sigma(x))`` from an encoder (RankGAN Sec. 3.3);
    - decides when a stage ends (fixed length, or a plateau of the gap ``Gamma`` of GoGAN Eq. 6) and records
      ``Gamma`` and the score ladder ``D_i(x)``, ``D_i(G_i(z))``, ``D_i(G_{i-1}(z))`` per stage;
    - saves and resumes everything atomically: weights, optimizers, scaler, EMA, RNG states, history.

    Args:
        generator: the live ``G`` (plain, ``DistributedDataParallel`` or ``DataParallel``).
        discriminator: the live ``D``.
        encoder: optional ``E`` returning ``(mu, logvar)`` of ``q(z | x)``, each ``(N, *latent_shape)``.
        ema_generator: optional EMA copy of ``G``, snapshotted with the stage.
        directory: where :meth:`save` writes and where stages older than the previous one are kept.
        latent_shape: shape of one latent code, e.g. ``(100, 1, 1)`` for DCGAN; needed by :meth:`sample_latent`.
        output_selector: picks the score from ``D``'s output for markers (``0`` for StarGAN's tuple).
        stage_length: end a stage after this many :meth:`record` calls (``None``: no fixed length).
        plateau_patience: end a stage once ``Gamma`` has stayed within ``plateau_tolerance`` of a reference
            value for this many consecutive :meth:`record` calls (``None``: off).
        plateau_tolerance: the band for the plateau test, in score units.

    Example:
        >>> G = torch.nn.Sequential(torch.nn.Linear(4, 8))
        >>> D = torch.nn.Sequential(torch.nn.Linear(8, 1))
        >>> _ = torch.nn.init.constant_(D[0].weight, 0.1)  # a critic that scores the data (mean 5) higher
        >>> manager = StageManager(G, D, latent_shape=(4,))
        >>> manager.stage, manager.previous
        (1, None)
        >>> manager.advance()                       # freeze stage 1; G and D keep training as stage 2
        >>> manager.stage, manager.previous.generator.training
        (2, False)
        >>> z = manager.sample_latent(3)            # z ~ N(0, I), shape (3, 4)
        >>> prev_fake = manager.previous.generator(z)
        >>> prev_fake.requires_grad                 # frozen forwards build no graph
        False
        >>> real_batches = [torch.randn(16, 8) + 5.0 for _ in range(4)]
        >>> m_high, m_low = manager.compute_markers(real_batches, statistic="median")  # RankGAN Eq. 6
        >>> m_high > m_low
        True
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        *,
        encoder: nn.Module | None = None,
        ema_generator: nn.Module | None = None,
        directory: str | Path | None = None,
        latent_shape: int | tuple[int, ...] | None = None,
        output_selector: OutputSelector = None,
        stage_length: int | None = None,
        plateau_patience: int | None = None,
        plateau_tolerance: float = 0.05,
    ) -> None:
        for name, module in (("generator", generator), ("discriminator", discriminator)):
            if not isinstance(module, nn.Module):
                raise TypeError(f"{name} must be a torch.nn.Module; got {type(module).__name__}")
        for name, optional in (("encoder", encoder), ("ema_generator", ema_generator)):
            if optional is not None and not isinstance(optional, nn.Module):
                raise TypeError(f"{name} must be a torch.nn.Module or None; got {type(optional).__name__}")
        self.generator = generator
        self.discriminator = discriminator
        self.encoder = encoder
        self.ema_generator = ema_generator
        self.directory = Path(directory) if directory is not None else None
        if isinstance(latent_shape, int):
            latent_shape = (latent_shape,)
        if latent_shape is not None:
            latent_shape = tuple(check_positive_int(d, "latent_shape") for d in latent_shape)
        self.latent_shape: tuple[int, ...] | None = latent_shape
        self.output_selector = output_selector
        self.stage_length = None if stage_length is None else check_positive_int(stage_length, "stage_length")
        self.plateau_patience = (
            None if plateau_patience is None else check_positive_int(plateau_patience, "plateau_patience")
        )
        self.plateau_tolerance = check_nonnegative(plateau_tolerance, "plateau_tolerance")
        self.stage = 1
        self.previous: FrozenStage | None = None
        self.markers: tuple[float, float] | None = None
        self.history: list[dict[str, Any]] = [self._new_stage_record(1)]
        self._registered: dict[str, Stateful] = {}
        self._plateau_reference: float | None = None
        self._plateau_count = 0

    # ----------------------------------------------------------------------------------------------- registry
    def register(self, name: str, obj: Stateful) -> None:
        """Save and restore ``obj`` (an optimizer, ``GradScaler``, EMA helper, ...) with the manager."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string; got {name!r}")
        if not (callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))):
            raise TypeError(f"{name} must have state_dict() and load_state_dict(); got {type(obj).__name__}")
        self._registered[name] = obj

    @property
    def registered(self) -> dict[str, Stateful]:
        return dict(self._registered)

    # ---------------------------------------------------------------------------------------------- the stages
    @staticmethod
    def _new_stage_record(stage: int) -> dict[str, Any]:
        return {"stage": stage, "markers": None, "gap": [], "real": [], "fake": [], "prev_fake": []}

    def _live(self) -> dict[str, nn.Module]:
        out = {"generator": self.generator, "discriminator": self.discriminator}
        if self.ema_generator is not None:
            out["ema_generator"] = self.ema_generator
        return out

    def advance(self, *, reset_optimizers: bool = False) -> None:
        """Finish the current stage: freeze copies of the live networks as the new ``previous`` and start the next.

        The live modules are not replaced: they keep training in place, initialised from the stage that just
        ended (RankGAN Algorithm 1). The stage before the old ``previous`` is written to ``directory`` (if
        given) and dropped from memory. With ``reset_optimizers=True`` the per-parameter state (Adam moments,
        step counts) of every registered ``torch.optim.Optimizer`` is cleared; learning rates are kept.
        """
        snapshot = {name: freeze(module) for name, module in self._live().items()}
        for module in snapshot.values():
            _broadcast_module(module)  # identical frozen copies on every rank
        old = self.previous
        self.previous = FrozenStage(stage=self.stage, **snapshot)
        if old is not None and self.directory is not None:
            self._write_old_stage(old)
        del old
        if reset_optimizers:
            for obj in self._registered.values():
                if isinstance(obj, torch.optim.Optimizer):
                    obj.state.clear()
        self.stage += 1
        self.markers = None
        self.history.append(self._new_stage_record(self.stage))
        self._plateau_reference, self._plateau_count = None, 0

    def _write_old_stage(self, stage: FrozenStage) -> None:
        if _rank() == 0 and self.directory is not None:
            weights = {name: module.state_dict() for name, module in stage.modules().items()}
            atomic_save({"stage": stage.stage, "weights": weights}, self.directory / f"stage-{stage.stage:04d}.pt")

    def memory_footprint(self) -> dict[str, int]:
        """Number and bytes of the distinct parameter and buffer tensors the manager holds in memory."""
        seen: dict[int, int] = {}
        modules = list(self._live().values())
        if self.encoder is not None:
            modules.append(self.encoder)
        if self.previous is not None:
            modules.extend(self.previous.modules().values())
        for module in modules:
            for tensor in list(module.parameters()) + list(module.buffers()):
                seen[id(tensor)] = tensor.numel() * tensor.element_size()
        return {"tensors": len(seen), "bytes": sum(seen.values())}

    # ------------------------------------------------------------------------------------------------ latents
    def _device(self) -> torch.device:
        for tensor in unwrap(self.generator).parameters():
            return tensor.device
        return torch.device("cpu")

    def sample_latent(self, n: int, *, real: Tensor | None = None) -> Tensor:
        """Draw ``n`` latent codes: ``z ~ N(0, I)``, or with an encoder ``z ~ N(mu(x), sigma(x))`` for ``real``.

        With an encoder and a real batch, ``n`` must equal the batch size and the encoder's ``(mu, logvar)``
        give ``z = mu + exp(logvar / 2) * eps`` (RankGAN Sec. 3.3). Without a real batch, ``z ~ N(0, I)``.

        Shape:
            - real: ``(n, *)``. Output: ``(n, *latent_shape)``.
        """
        n = check_positive_int(n, "n")
        if real is not None and self.encoder is not None:
            if real.shape[0] != n:
                raise ValueError(f"real has batch size {real.shape[0]}; expected n = {n}")
            with torch.no_grad():
                output = self.encoder(real)
            if not (isinstance(output, (tuple, list)) and len(output) == 2):
                raise TypeError("the encoder must return (mu, logvar); got " + type(output).__name__)
            mu, logvar = output
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            return z.reshape(n, *self.latent_shape) if self.latent_shape is not None else z
        if self.latent_shape is None:
            raise ValueError("latent_shape is not set; pass StageManager(..., latent_shape=...) to sample z ~ N(0, I)")
        return torch.randn(n, *self.latent_shape, device=self._device())

    def pretrain_encoder(
        self,
        batches: Iterable[Any],
        *,
        epochs: int = 1,
        lr: float = 1e-3,
        kl_weight: float = 1.0,
        progress: bool = False,
    ) -> list[float]:
        r"""Stage 0 of RankGAN (Sec. 3.3): train the encoder with the live generator as the VAE decoder.

        .. math::
            L = \underbrace{\tfrac1N \textstyle\sum_k \lVert G(z_k) - x_k \rVert_2^2}_{\text{reconstruction}}
            + \beta \, \underbrace{\tfrac1N \textstyle\sum_k \tfrac12 \sum_d
              \big(\mu_{kd}^2 + \sigma_{kd}^2 - \log \sigma_{kd}^2 - 1\big)}_{KL(q(z|x) \,\|\, N(0, I))},
            \qquad z_k = \mu_k + \sigma_k \epsilon_k

        Both terms are summed over pixels / latent dimensions and averaged over the batch; ``beta`` is
        ``kl_weight`` (1 gives the standard ELBO). Adam with ``lr`` trains encoder and generator together;
        afterwards the encoder is frozen (eval mode, no gradients) and the generator is G_1's starting point.
        Returns the mean loss per epoch.
        """
        if self.encoder is None:
            raise ValueError("pretrain_encoder needs an encoder; pass StageManager(..., encoder=...)")
        epochs = check_positive_int(epochs, "epochs")
        beta = check_nonnegative(kl_weight, "kl_weight")
        encoder, generator = self.encoder, self.generator
        params = list(encoder.parameters()) + list(generator.parameters())
        optimizer = torch.optim.Adam(params, lr=lr)
        encoder.train()
        generator.train()
        losses = []
        for _ in _progress(range(epochs), progress, "VAE"):
            total, count = 0.0, 0
            for batch in batches:
                x = _real_of(batch).to(self._device())
                mu, logvar = encoder(x)
                z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
                if self.latent_shape is not None:
                    z = z.reshape(x.shape[0], *self.latent_shape)
                recon = (generator(z) - x).pow(2).flatten(1).sum(1).mean()
                kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).flatten(1).sum(1).mean()
                loss = recon + beta * kl
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total, count = total + float(loss.detach()) * x.shape[0], count + x.shape[0]
            losses.append(total / max(count, 1))
        _freeze_in_place(encoder)
        return losses

    # ------------------------------------------------------------------------------------------------ markers
    def compute_markers(
        self,
        real_batches: Iterable[Any],
        *,
        statistic: Literal["mean", "median"] = "mean",
        batch_statistics: bool = False,
    ) -> tuple[float, float]:
        """RankGAN's markers (Eq. 6, Algorithm 1) from the frozen previous stage over the batches given.

        ``m_high`` is the statistic of ``D_{i-1}(x)`` over every real sample, ``m_low`` that of
        ``D_{i-1}(G_{i-1}(z))`` over as many latents (drawn with :meth:`sample_latent`, from the encoder when
        there is one). ``"mean"`` is the paper's expectation; ``"median"`` the authors' code (the usual median:
        the mean of the two middle values for an even count). Under ``torch.distributed`` the statistic covers
        every rank's batches, so all ranks get the numbers one process would get over the union of the data;
        ranks may hold different numbers of batches and samples.

        ``batch_statistics=True`` is for critics with BatchNorm that are only ever run in train mode on batches
        that are all real or all fake (DCGAN's ``netD``): the frozen critic then scores each batch with that
        batch's statistics, the scale the stage's losses see, instead of its running statistics, which put such
        a critic's scores on another scale. The frozen generator stays in eval mode, as when it makes
        ``G_{i-1}(z)`` during the stage. See :func:`use_batch_statistics`.

        Returns:
            ``(m_high, m_low)``, also stored in :attr:`markers` and the stage's history.
        """
        statistic = check_choice(statistic, "statistic", ("mean", "median"))  # type: ignore[assignment]
        batch_statistics_ = bool(batch_statistics)
        if self.previous is None:
            raise ValueError("markers need a previous stage; call advance() first (stage 1 has none)")
        previous_g, previous_d = self.previous.generator, self.previous.discriminator
        real_scores, fake_scores = [], []
        with use_batch_statistics(previous_d) if batch_statistics_ else contextlib.nullcontext():
            for batch in real_batches:
                x = _real_of(batch).to(self._device())
                z = self.sample_latent(x.shape[0], real=x)
                real_scores.append(self._scores(previous_d(x)))
                fake_scores.append(self._scores(previous_d(previous_g(z))))
        if not real_scores:
            raise ValueError("real_batches is empty; expected at least one batch")
        high, low = marker_statistics(torch.cat(real_scores), torch.cat(fake_scores), statistic=statistic)
        if low > high:
            warnings.warn(
                f"the previous stage's critic scores its fakes above the real data (m_low={low:.4g} > "
                f"m_high={high:.4g}); StageRankLoss needs m_low <= m_high, so train the previous stage longer",
                RuntimeWarning,
                stacklevel=2,
            )
        self.markers = (high, low)
        self.history[-1]["markers"] = {
            "m_high": high,
            "m_low": low,
            "statistic": statistic,
            "batch_statistics": batch_statistics_,
        }
        return self.markers

    def _scores(self, output: Any) -> Tensor:
        return per_sample_scores(select_scores(output, self.output_selector), "discriminator output").detach()

    # ---------------------------------------------------------------------------------------- end of a stage
    def record(
        self,
        real_scores: Tensor,
        fake_scores: Tensor,
        prev_fake_scores: Tensor | None = None,
    ) -> float:
        """Log the current critic's score ladder and the gap ``Gamma = mean D(x) - mean D(G(z))`` (GoGAN Eq. 6).

        Call it at whatever interval defines a "record" for ``stage_length`` / ``plateau_patience`` (a step, an
        epoch). Returns ``Gamma``.
        """
        real = float(per_sample_scores(real_scores, "real_scores").detach().double().mean())
        fake = float(per_sample_scores(fake_scores, "fake_scores").detach().double().mean())
        gap = real - fake
        entry = self.history[-1]
        entry["real"].append(real)
        entry["fake"].append(fake)
        entry["gap"].append(gap)
        if prev_fake_scores is not None:
            prev = per_sample_scores(prev_fake_scores, "prev_fake_scores").detach().double().mean()
            entry["prev_fake"].append(float(prev))
        if self._plateau_reference is None or abs(gap - self._plateau_reference) > self.plateau_tolerance:
            self._plateau_reference, self._plateau_count = gap, 0
        else:
            self._plateau_count += 1
        return gap

    @property
    def stage_done(self) -> bool:
        """Whether the current stage has reached ``stage_length`` records or a plateau of ``Gamma``."""
        records = len(self.history[-1]["gap"])
        if self.stage_length is not None and records >= self.stage_length:
            return True
        return self.plateau_patience is not None and self._plateau_count >= self.plateau_patience

    # -------------------------------------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: stage, markers, live and frozen weights, registered state, RNG, history."""
        state: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "stage": self.stage,
            "markers": None if self.markers is None else list(self.markers),
            "live": {name: unwrap(module).state_dict() for name, module in self._live().items()},
            "encoder": None if self.encoder is None else self.encoder.state_dict(),
            "previous": None,
            "registered": {name: obj.state_dict() for name, obj in self._registered.items()},
            "rng": _rng_state(),
            "history": copy.deepcopy(self.history),
            "plateau": [self._plateau_reference, self._plateau_count],
        }
        if self.previous is not None:
            state["previous"] = {
                "stage": self.previous.stage,
                "weights": {name: module.state_dict() for name, module in self.previous.modules().items()},
            }
        return state

    def load_state_dict(self, state: Mapping[str, Any], *, restore_rng: bool = True) -> None:
        """Restore :meth:`state_dict`'s output; frozen copies are rebuilt from the live modules' structure."""
        if not isinstance(state, Mapping) or state.get("format") != FORMAT_VERSION:
            raise CheckpointError(f"not a StageManager checkpoint of format {FORMAT_VERSION}")
        missing = set(state["registered"]) ^ set(self._registered)
        if missing:
            raise CheckpointError(
                f"registered objects differ: checkpoint has {sorted(state['registered'])}, "
                f"this manager has {sorted(self._registered)}"
            )
        live = self._live()
        if set(state["live"]) != set(live):
            raise CheckpointError(f"checkpoint holds networks {sorted(state['live'])}; this manager has {sorted(live)}")
        for name, module in live.items():
            unwrap(module).load_state_dict(state["live"][name])
        if state["encoder"] is not None:
            if self.encoder is None:
                raise CheckpointError("checkpoint holds an encoder but this manager has none")
            self.encoder.load_state_dict(state["encoder"])
        self.previous = None
        if state["previous"] is not None:
            frozen = {}
            for name, weights in state["previous"]["weights"].items():
                module = freeze(live[name])
                module.load_state_dict(weights)
                frozen[name] = module
            self.previous = FrozenStage(stage=int(state["previous"]["stage"]), **frozen)
        for name, obj in self._registered.items():
            obj.load_state_dict(state["registered"][name])
        self.stage = int(state["stage"])
        self.markers = None if state["markers"] is None else (float(state["markers"][0]), float(state["markers"][1]))
        self.history = copy.deepcopy(list(state["history"]))
        reference, count = state["plateau"]
        self._plateau_reference, self._plateau_count = reference, int(count)
        if restore_rng:
            _set_rng_state(state["rng"])

    def save(self, directory: str | Path | None = None) -> Path | None:
        """Write the checkpoint atomically to ``directory`` (default: the manager's), on rank 0 only.

        A process killed at any instant during the save leaves the previous checkpoint intact and loadable.
        Returns the path written (``None`` on other ranks).
        """
        target = self._directory(directory)
        state = self.state_dict()  # every rank builds it: state_dict involves no collectives
        path = None
        if _rank() == 0:
            path = atomic_save(state, target / CHECKPOINT_NAME)
        if _world() > 1:
            dist.barrier()
        return path

    def load(self, directory: str | Path | None = None, *, restore_rng: bool = True) -> None:
        """Load the checkpoint in ``directory`` (default: the manager's); unsafe files are refused."""
        target = self._directory(directory)
        state = safe_load(target / CHECKPOINT_NAME, map_location=self._device())
        self.load_state_dict(state, restore_rng=restore_rng)

    def has_checkpoint(self, directory: str | Path | None = None) -> bool:
        return (self._directory(directory) / CHECKPOINT_NAME).is_file()

    def _directory(self, directory: str | Path | None) -> Path:
        if directory is not None:
            return Path(directory)
        if self.directory is None:
            raise ValueError("no directory: pass one to save()/load() or StageManager(..., directory=...)")
        return self.directory


def _real_of(batch: Any) -> Tensor:
    """The image tensor of a batch that may be ``x`` or ``(x, y, ...)`` as data loaders yield."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    raise TypeError(f"a batch must be a Tensor or a (Tensor, ...) tuple; got {type(batch).__name__}")


def _progress(iterable: Iterable[Any], enabled: bool, description: str) -> Iterable[Any]:
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=description)


__all__ = ["FrozenStage", "StageManager", "freeze", "marker_statistics", "unwrap", "use_batch_statistics"]
