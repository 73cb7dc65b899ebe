"""The CUDA-graph fast path: a `GanStep`'s whole update captured once and replayed.

Static input tensors are filled before each replay, augmentation stays outside the graph, and
dropout draws from a generator registered with the graph, so replays are the same computation as
the eager step. The first `GRAPH_WARMUP` steps run eagerly on a side stream (real training steps,
which also create Adam's capturable state); a failed capture falls back to eager training. CUDA
only: `GanStep` imports this module only when its ``fast`` flag is on, which it never is on the CPU.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from wsi_aug.gan.models import set_dropout_generator

if TYPE_CHECKING:
    from wsi_aug.gan.step import GanStep

log = logging.getLogger("wsi_aug.gan")

GRAPH_WARMUP = 3  # eager steps (real training steps) before the CUDA graph is captured


class CudaGraphStep:
    """Runs `step.optimize` through one CUDA graph: warm-up, capture, then replays."""

    def __init__(self, step: GanStep, warmup: int = GRAPH_WARMUP) -> None:
        self.step = step
        self.warmup_left = warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: dict[str, torch.Tensor] = {}
        self.side_stream: torch.cuda.Stream | None = None

    @property
    def captured(self) -> bool:
        """Whether the graph exists (every later call is a replay)."""
        return self.graph is not None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One step on device tensors; returns the 4 losses (a fresh tensor, not the static one)."""
        s = self.step
        if not self.static:
            self.static = {"x": torch.empty_like(x), "y": torch.empty_like(y)}
        sx, sy = self.static["x"], self.static["y"]
        sx.copy_(x)
        sy.copy_(y)
        if self.warmup_left > 0:  # real steps; they also create Adam's (capturable) state
            if self.side_stream is None:
                self.side_stream = torch.cuda.Stream(device=s.device)
            side = self.side_stream
            side.wait_stream(torch.cuda.current_stream(s.device))
            with torch.cuda.stream(side):
                out = s.optimize(sx, sy)
            torch.cuda.current_stream(s.device).wait_stream(side)
            self.warmup_left -= 1
            return out
        if self.graph is None:
            torch.cuda.synchronize(s.device)
            graph = torch.cuda.CUDAGraph()
            if hasattr(graph, "register_generator_state"):
                graph.register_generator_state(s.dropout_rng)
            else:  # older torch: only the default CUDA generator is graph-safe
                log.info(
                    "this torch cannot register generators with a CUDA graph; dropout "
                    "draws from the default CUDA generator"
                )
                set_dropout_generator(s.G, None)
            # grads to None so the captured backward allocates them from the graph's pool
            s.opt_g.zero_grad(set_to_none=True)
            s.opt_d.zero_grad(set_to_none=True)
            try:
                with torch.cuda.graph(graph):
                    self.static["out"] = s.optimize(sx, sy)
            except RuntimeError as exc:  # capture records only: nothing has run, so go eager
                log.warning("CUDA-graph capture failed (%s); training eagerly from here", exc)
                torch.cuda.synchronize(s.device)
                s.fast = False
                set_dropout_generator(s.G, s.dropout_rng)
                s.opt_g.zero_grad(set_to_none=True)
                s.opt_d.zero_grad(set_to_none=True)
                return s.optimize(sx, sy)
            self.graph = graph
        self.graph.replay()  # capture records only: this replay runs the captured step
        return self.static["out"].clone()
