"""A user's own model builders, as ``lowbit train --model usermodels:tiny_resnet`` imports them
(tests put this folder on PYTHONPATH / sys.path)."""
from __future__ import annotations

import torch
from torch import nn


class _Block(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn(self.conv(x)))       # residual shortcut


class TinyResNet(nn.Module):
    def __init__(self, width: int, in_channels: int, num_classes: int):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.block = _Block(width)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn(self.stem(x))))
        x = self.block(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def tiny_resnet(width: int = 8, in_channels: int = 3, num_classes: int = 10,
                scheme: str = "float") -> nn.Module:
    """A small residual net for any input size (global average pool before the classifier);
    ``scheme`` other than "float" converts it with lowbit.train.quantize (e.g. "bnn")."""
    model = TinyResNet(width, in_channels, num_classes)
    if scheme != "float":
        from lowbit.train import quantize
        model = quantize(model, scheme, keep_first=True, keep_last=True)
    return model


def not_a_model(width: int = 8):
    """Returns something that is not an nn.Module."""
    return {"width": width}
