"""Shared fixtures: a small real Fashion-MNIST subset, and few torch threads."""
import pytest
import torch

from lowbit.data import load, subset, train_val_split

torch.set_num_threads(1)  # robust on a shared 2-core machine; resume tests need a fixed count


@pytest.fixture(scope="session")
def fashion_small():
    """5 000 training + 1 000 validation images and a 2 000-image test subset (real data)."""
    images, labels = load("train")
    train, val = train_val_split(*subset(images, labels, 6000, seed=0), val_size=1000, seed=0)
    test = subset(*load("test"), 2000, seed=0)
    return train, val, test


@pytest.fixture(scope="session")
def fashion_tiny(fashion_small):
    """512 training and 256 validation images, for runs that only test mechanics."""
    (x, y), (vx, vy), _ = fashion_small
    return (x[:512], y[:512]), (vx[:256], vy[:256])
