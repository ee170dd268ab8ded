"""A frozen TorchScript trace of the network for inference: same embeddings, faster on CPU.

`trace_for_inference(model)` traces, freezes (batch norm folded) and optimises the network, checks the trace
against the eager network on batches of 1 to 3 faces, and falls back to the eager network on any failure:
tracing is an optimisation, never a reason not to serve. Used by the service (`DRFACE_TRACE_NETWORK`) and
`benchmarks/bench_backbone.py`.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from model.mobilefacenet import INPUT_SIZE

logger = logging.getLogger("drface.model")


class TracedNetwork(nn.Module):
    """A frozen TorchScript trace of the network (batch norm folded, oneDNN kernels): same embeddings, faster.

    Holds an empty parameter because `embed_faces` reads the device and dtype from the parameters, which
    freezing turns into constants.
    """

    def __init__(self, traced: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.traced = traced
        self.anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 112, 112) -> (B, D), like the traced network."""
        return self.traced(x)


def trace_for_inference(model: nn.Module, tolerance: float = 1e-4) -> nn.Module:
    """A traced copy of `model` if it gives the same normalised embeddings (batch 1 to 3), else `model`."""
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(2, 3, INPUT_SIZE, INPUT_SIZE, generator=generator) * 2 - 1
    try:
        # No warnings filter here: `catch_warnings` is process-wide and not thread-safe (this runs off the
        # event loop); the network's own input checks stay out of traces, so tracing warns about nothing.
        with torch.no_grad():
            traced = torch.jit.freeze(torch.jit.trace(model.eval(), example))
            traced = TracedNetwork(torch.jit.optimize_for_inference(traced))
        with torch.inference_mode():
            for batch in (1, 2, 3):
                x = torch.rand(batch, 3, INPUT_SIZE, INPUT_SIZE, generator=generator) * 2 - 1
                error = (F.normalize(traced(x), dim=1) - F.normalize(model(x), dim=1)).abs().max()
                if not error <= tolerance:
                    raise ValueError(f"traced network differs from eager by {float(error):.2e}")
    except Exception as exc:  # tracing is an optimisation: any failure falls back to the eager network
        logger.warning("network not traced, using eager PyTorch: %s", exc)
        return model
    return traced
