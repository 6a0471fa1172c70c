"""aloe.nn's evaluation shortcuts: a transformer pass that reuses a fixed prefix."""

from __future__ import annotations

import pytest
import torch

from aloe.nn import prefix_qkv, suffix_outputs, transformer


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_a_fixed_prefix_gives_the_full_pass_on_the_suffix(layers: int) -> None:
    torch.manual_seed(0)
    net = transformer(16, layers, 2, 4, 0.1).eval()  # dropout off in eval mode
    prefix, suffix = torch.randn(3, 2, 16), torch.randn(3, 5, 16)
    with torch.no_grad():
        want = net(torch.cat([prefix, suffix], dim=1))[:, 2:]
        got = suffix_outputs(net, prefix, prefix_qkv(net, prefix), suffix)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
