"""The model step of the mode-seeking Pix2Pix: G, D, both optimisers, the losses, one update.

One step takes K pairs of different conditions (batch 2K, laid out [firsts..., seconds...]):
G forward; D step on (real, G(x) detached) with BCE-with-logits; G step on
adversarial + λ·L1 + μ·L_ms through the updated D. D sees the image alone unless ``d_conditional``.

On CUDA the step runs under bf16 autocast with channels_last tensors; with ``fast`` it is replayed
as one CUDA graph (`wsi_aug.gan.graph`, imported only then). Under DDP (`wsi_aug.gan.ddp`) G and D
are wrapped for the gradient all-reduce. The CPU path is plain fp32 and never touches either.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from wsi_aug.errors import WsiAugError
from wsi_aug.gan.checkpoints import (
    Checkpoint,
    check_architecture,
    load_optimizer,
    load_state,
    save_checkpoint,
)
from wsi_aug.gan.losses import discriminator_loss, generator_losses
from wsi_aug.gan.models import (
    GanConfig,
    build_discriminator,
    build_generator,
    derived_seed,
    set_dropout_generator,
)

if TYPE_CHECKING:
    from wsi_aug.gan.graph import CudaGraphStep

log = logging.getLogger("wsi_aug.gan")


class GanStep:
    """The networks, optimisers, random generators and counters of one training process.

    ``amp``: bf16 autocast (default: on for CUDA; never on the CPU). ``fast``: the CUDA-graph step
    (honoured on CUDA in a single process only). ``world_size > 1`` wraps G and D in DDP (the
    process group must exist). All random state is local: the weights are initialised from a
    CPU generator seeded with `seed` (the same on every rank), dropout draws from a device
    generator and augmentation from a numpy generator, both derived from (seed, rank).
    """

    def __init__(
        self,
        cfg: GanConfig,
        *,
        device: torch.device | str = "cpu",
        seed: int = 0,
        amp: bool | None = None,
        fast: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        cuda = self.device.type == "cuda"
        self.amp = cuda if amp is None else bool(amp) and cuda
        self.fast = bool(fast) and cuda and world_size == 1
        init = torch.Generator().manual_seed(seed)
        self.G = build_generator(cfg, init).to(self.device)
        self.D = build_discriminator(cfg, init).to(self.device)
        if cuda:
            # the stubs of Module.to lack its memory_format keyword
            self.G = self.G.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            self.D = self.D.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.dropout_rng = torch.Generator(device=self.device)
        self.dropout_rng.manual_seed(derived_seed(seed, rank, 1))
        set_dropout_generator(self.G, self.dropout_rng)
        self.np_rng = np.random.default_rng([seed, rank, 2])
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(
            self.G.parameters(), lr=cfg.lr, betas=betas, capturable=self.fast
        )
        self.opt_d = torch.optim.Adam(
            self.D.parameters(), lr=cfg.lr, betas=betas, capturable=self.fast
        )
        # what the D and G steps call: G and D themselves, or their DDP wrappers
        self.g_net: nn.Module = self.G
        self.d_net: nn.Module = self.D
        if world_size > 1:
            from wsi_aug.gan.ddp import wrap

            wrap(self)
        self.step = 0
        self.epoch = 0
        self.epoch_step = 0
        self._graph: CudaGraphStep | None = None

    # -- one step ---------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast when `amp`, else a no-op."""
        # cache_enabled=False: autocast's weight cache must not outlive a CUDA-graph capture.
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.amp, cache_enabled=False
        )

    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        """`t` on the step's device (channels_last on CUDA)."""
        t = t.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def _d_input(self, x: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.to(img.dtype), img], 1) if self.cfg.d_conditional else img

    def _set_requires_grad(self, on: bool) -> None:
        for p in self.D.parameters():
            p.requires_grad_(on)

    def _backward_d(self, x: torch.Tensor, y: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """D step: real patches vs. detached fakes, through the DDP wrapper (all-reduce)."""
        self._set_requires_grad(True)
        self.opt_d.zero_grad(set_to_none=True)
        with self.autocast():
            d_real = self.d_net(self._d_input(x, y))
            d_fake = self.d_net(self._d_input(x, fake.detach()))
        d_loss = discriminator_loss(d_real, d_fake)
        d_loss.backward()
        self.opt_d.step()
        return d_loss

    def _backward_g(
        self, x: torch.Tensor, y: torch.Tensor, fake: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """G step through the updated D; D is frozen and called unwrapped (DDP expects no grad)."""
        cfg = self.cfg
        self._set_requires_grad(False)
        self.opt_g.zero_grad(set_to_none=True)
        with self.autocast():
            d_fake_g = self.D(self._d_input(x, fake))
        total, adv, l1, ms = generator_losses(
            d_fake_g,
            fake,
            y,
            x,
            l1_weight=cfg.l1_weight,
            ms_weight=cfg.ms_weight,
            ms_eps=cfg.ms_eps,
            ms_ceiling=cfg.ms_ceiling,
            ms_downsample=cfg.ms_downsample,
        )
        total.backward()
        self.opt_g.step()
        self._set_requires_grad(True)
        return adv, l1, ms

    def optimize(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One update on device tensors; returns [d_loss, g_adv, g_l1, g_ms] (detached).

        Free of host synchronisation and value-dependent branches so it can be graph-captured.
        """
        with self.autocast():
            fake = self.g_net(x)
        d_loss = self._backward_d(x, y, fake)
        adv, l1, ms = self._backward_g(x, y, fake)
        return torch.stack([d_loss.detach(), adv.detach(), l1.detach(), ms.detach()])

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One step on a (condition, image) batch; returns the 4 losses as a device tensor."""
        self.G.train()
        self.D.train()
        x, y = self.to_device(x), self.to_device(y)
        if self.fast:
            if self._graph is None:
                from wsi_aug.gan.graph import CudaGraphStep

                self._graph = CudaGraphStep(self)
            return self._graph(x, y)
        return self.optimize(x, y)

    @property
    def graph_captured(self) -> bool:
        """Whether the CUDA graph of the step has been captured (replays from now on)."""
        return self._graph is not None and self._graph.captured

    def generate(self, x: torch.Tensor) -> torch.Tensor:
        """G(x) in eval mode (no dropout, running BN statistics), then back to training mode."""
        was = self.G.training
        self.G.eval()
        try:
            with torch.no_grad(), self.autocast():
                return self.G(self.to_device(x)).float()
        finally:
            self.G.train(was)

    # -- state --------------------------------------------------------------------------------
    def numpy_states(self) -> list[dict[str, Any]]:
        """The augmentation generators' states, one per rank (a collective under DDP)."""
        state = dict(self.np_rng.bit_generator.state)
        if self.world_size > 1:
            from wsi_aug.gan.ddp import all_gather

            return all_gather(state, self.world_size)
        return [state]

    def save(
        self, path: Path, numpy_states: list[dict[str, Any]], extra: dict[str, Any] | None = None
    ) -> Path:
        """Write a checkpoint of everything needed to continue exactly."""
        return save_checkpoint(
            path,
            config=self.cfg,
            generator=self.G,
            discriminator=self.D,
            opt_g=self.opt_g,
            opt_d=self.opt_d,
            step=self.step,
            epoch=self.epoch,
            epoch_step=self.epoch_step,
            torch_rng=self.dropout_rng.get_state(),
            numpy_rng=numpy_states,
            extra=extra,
        )

    def load(self, ck: Checkpoint) -> None:
        """Restore weights, optimisers, counters and random states (before the first step)."""
        if self.graph_captured:
            raise RuntimeError("GanStep.load must come before the CUDA graph is captured")
        check_architecture(ck.path, ck.config, self.cfg, hint="training options")
        load_state(self.G, ck.generator, ck.path, "generator")
        load_state(self.D, ck.discriminator, ck.path, "discriminator")
        if ck.opt_g is None or ck.opt_d is None:
            raise WsiAugError(
                f"{ck.path}: holds no optimiser state, so training cannot resume "
                "from it; train without --resume"
            )
        load_optimizer(self.opt_g, ck.opt_g)
        load_optimizer(self.opt_d, ck.opt_d)
        self.step, self.epoch, self.epoch_step = ck.step, ck.epoch, ck.epoch_step
        current = self.dropout_rng.get_state()
        if ck.torch_rng is not None and ck.torch_rng.numel() == current.numel():
            self.dropout_rng.set_state(ck.torch_rng)
        else:
            log.info("%s: dropout generator saved on another device type; reseeded", ck.path)
            self.dropout_rng.manual_seed(derived_seed(self.seed, self.rank, 1, ck.step))
        states = ck.numpy_rng or []
        if len(states) == self.world_size:
            self.np_rng.bit_generator.state = states[self.rank]
        else:
            log.info(
                "%s: saved by %d process(es), resumed by %d; augmentation reseeded",
                ck.path,
                len(states),
                self.world_size,
            )
            self.np_rng = np.random.default_rng([self.seed, self.rank, 2, ck.step])


def weights_fingerprint(module: nn.Module) -> str:
    """SHA-256 of a module's parameters (names, shapes and bytes), to compare processes."""
    h = hashlib.sha256()
    for name, p in module.named_parameters():
        t = p.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()
