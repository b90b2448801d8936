"""The float reference models of Deep Compression, registered for ``lowbit train --model``.

Both take normalised float32 input ``(N, 1, 28, 28)`` (see ``lowbit.data.normalization``) and
return logits ``(N, num_classes)``.

- ``lenet300``: LeNet-300-100, fully connected 784-300-100-10 with ReLU (266 610 parameters,
  1.07 MB in fp32).
- ``lenet5``: LeNet-5 in the Caffe form Deep Compression used: conv5x5 20, maxpool 2,
  conv5x5 50, maxpool 2, fc 500, ReLU, fc 10; no padding and no activation after the convs
  (431 080 parameters, 1.72 MB in fp32).

Default training settings (Adam with a cosine learning-rate decay) are chosen so that the
float baselines reach the Fashion-MNIST targets; see docs/results.md.
"""
from __future__ import annotations

import torch
from torch import nn

from .registry import register

__all__ = ["LeNet300", "LeNet5", "lenet300", "lenet5"]


class LeNet300(nn.Module):
    """784-300-100-10 multilayer perceptron with ReLU."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """Caffe LeNet-5: conv(20,5) pool conv(50,5) pool fc(500) ReLU fc(10)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)      # 28 -> 24
        self.pool1 = nn.MaxPool2d(2)          # 24 -> 12
        self.conv2 = nn.Conv2d(20, 50, 5)     # 12 -> 8
        self.pool2 = nn.MaxPool2d(2)          # 8 -> 4
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(x))
        x = self.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


@register("lenet300", epochs=15, lr=1e-3, batch_size=128, optimizer="adam",
          schedule="cosine", weight_decay=0.0)
def lenet300(num_classes: int = 10) -> nn.Module:
    """LeNet-300-100 (784-300-100-10, ReLU), float."""
    return LeNet300(num_classes)


@register("lenet5", epochs=12, lr=1e-3, batch_size=128, optimizer="adam",
          schedule="cosine", weight_decay=0.0)
def lenet5(num_classes: int = 10) -> nn.Module:
    """LeNet-5, Caffe form of Deep Compression (conv20-pool-conv50-pool-fc500-fc10), float."""
    return LeNet5(num_classes)
