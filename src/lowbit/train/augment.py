"""Training-time image augmentation for classification: random horizontal flips and random
translations, applied to a normalised batch on its device.

    spec  = "flip" | "shift=S" | "flip,shift=S"
    flip:    x[b] <- x[b, :, :, ::-1] with probability 1/2
    shift=S: x[b] <- crop(pad(x[b], S, replicate), dy, dx),  dy, dx ~ U{0..2S}
             (a translation by up to S pixels each way; the border pixel fills the gap)

Draws come from torch's default generator, which ``fit`` seeds and checkpoints, so a resumed
run repeats the same augmentations.  Evaluation never augments.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["Augment", "parse"]


def parse(spec: str | None) -> dict:
    """``"flip,shift=2"`` -> ``{"flip": True, "shift": 2}``; a clear error names the part."""
    out = {"flip": False, "shift": 0}
    if not spec:
        return out
    for part in str(spec).split(","):
        key, _, value = part.strip().partition("=")
        if key == "flip" and not value:
            out["flip"] = True
        elif key == "shift" and value.isdigit() and 0 < int(value) <= 16:
            out["shift"] = int(value)
        else:
            raise ValueError(f"augment: {part.strip()!r}: expected 'flip' or 'shift=S' with S "
                             f"pixels in 1..16 (e.g. --augment flip,shift=2)")
    return out


class Augment:
    """Callable on a batch ``(B, C, H, W)`` float; ``bool(aug)`` is False when it does nothing."""

    def __init__(self, spec: str | None):
        self.spec = spec or ""
        opts = parse(spec)
        self.flip, self.shift = opts["flip"], opts["shift"]

    def __bool__(self) -> bool:
        return self.flip or self.shift > 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        if self.flip:
            mask = torch.rand(b) < 0.5                          # (B,) bool, CPU generator
            x = torch.where(mask.to(x.device)[:, None, None, None], x.flip(3), x)
        if self.shift:
            s = self.shift
            xp = F.pad(x, (s, s, s, s), mode="replicate")      # (B, C, H+2s, W+2s)
            dy = torch.randint(0, 2 * s + 1, (b,)).to(x.device)
            dx = torch.randint(0, 2 * s + 1, (b,)).to(x.device)
            rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]   # (B, H, 1)
            cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]   # (B, 1, W)
            bidx = torch.arange(b, device=x.device)[:, None, None]
            x = xp.permute(0, 2, 3, 1)[bidx, rows, cols].permute(0, 3, 1, 2).contiguous()
        return x
