"""The same network in PyTorch, for comparisons only (tinycnn never uses torch).

`torch_mirror(net)` builds a torch.nn.Sequential with the same layers and copies the
weights, so the two can be checked against each other before they are timed.
PyTorch's Linear stores W as (out, in); tinycnn's Dense stores (in, out): transposed.
"""

from __future__ import annotations

import numpy as np


def torch_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch is not None  # (uses the name: the import itself is the test)


def torch_mirror(net, device: str = "cpu"):
    """A torch.nn.Sequential equal to the tinycnn Sequential `net` (weights copied)."""
    import torch
    from torch import nn

    from tinycnn.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU

    mods = []
    for layer in net.layers:
        if isinstance(layer, Conv2D):
            m = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.pad)
            m.weight.data = torch.from_numpy(net.backend.to_numpy(layer.params["w"].value).copy())
            m.bias.data = torch.from_numpy(net.backend.to_numpy(layer.params["b"].value).copy())
        elif isinstance(layer, Dense):
            m = nn.Linear(layer.in_features, layer.out_features)
            m.weight.data = torch.from_numpy(net.backend.to_numpy(layer.params["w"].value).T.copy())
            m.bias.data = torch.from_numpy(net.backend.to_numpy(layer.params["b"].value).copy())
        elif isinstance(layer, ReLU):
            m = nn.ReLU()
        elif isinstance(layer, MaxPool2D):
            m = nn.MaxPool2d(layer.size, layer.stride, ceil_mode=layer.ceil_mode)
        elif isinstance(layer, Flatten):
            m = nn.Flatten()
        elif isinstance(layer, Dropout):
            m = nn.Dropout(layer.p)
        else:
            raise TypeError(f"no torch equivalent for {layer}")
        mods.append(m)
    return nn.Sequential(*mods).to(device)


def check_mirror(net, tnet, x: np.ndarray, rtol: float = 1e-4) -> float:
    """Relative difference of the two networks' logits in eval mode (must be small)."""
    import torch

    from tinycnn.gradcheck import rel_error

    ours = net.backend.to_numpy(net.forward(net.backend.asarray(x), train=False))
    tnet.eval()
    with torch.no_grad():
        theirs = tnet(torch.from_numpy(x)).numpy()
    tnet.train()
    err = rel_error(ours, theirs)
    if err > rtol:
        raise AssertionError(f"torch mirror disagrees with tinycnn: rel. error {err:.2e}")
    return err


def mirror_gradients(net, tnet) -> dict:
    """The gradients of the torch mirror `tnet` of `net` after a backward pass, as float64
    NumPy arrays keyed and laid out as tinycnn's (``"<layer index>.<param name>"``; a
    Linear's weight gradient transposed back to Dense's (in, out))."""
    from tinycnn.layers import Dense

    out = {}
    for i, (layer, module) in enumerate(zip(net.layers, tnet)):
        for name in layer.params:
            tensor = {"w": module.weight, "b": module.bias}[name]
            grad = tensor.grad.detach().float().cpu().numpy().astype(np.float64)
            out[f"{i}.{name}"] = grad.T if isinstance(layer, Dense) and name == "w" else grad
    return out
