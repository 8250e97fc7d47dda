"""pyattn.nn.MultiheadAttention: a drop-in for torch.nn.MultiheadAttention. Loads torch's
state_dict (and torch loads its), and matches torch's outputs, attention weights and
gradients (inputs and parameters) in float64, across the module's options and masks."""

from __future__ import annotations

import pytest
import torch

import pyattn.nn
from conftest import assert_close

CASES = {
    "seq_first_plain": dict(kw=dict(), need_weights=True),
    "batch_first_bool_masks": dict(kw=dict(batch_first=True), attn_mask="bool_causal", kpm="bool", need_weights=False),
    "float_mask_3d_bool_kpm": dict(kw=dict(), attn_mask="float_3d", kpm="bool", need_weights=True),
    "kdim_vdim_no_bias": dict(kw=dict(kdim=20, vdim=12, bias=False, batch_first=True), need_weights=True,
                              average=False),
    "bias_kv_zero_attn": dict(kw=dict(add_bias_kv=True, add_zero_attn=True), kpm="bool", attn_mask="float_2d",
                              need_weights=True),
    "unbatched": dict(kw=dict(), unbatched=True, attn_mask="bool_causal", need_weights=True),
    "float_kpm": dict(kw=dict(batch_first=True), kpm="float", need_weights=False),
}


def _inputs(case, e, gen):
    n, lq, s = 3, 7, 9
    kdim = case["kw"].get("kdim", e)
    vdim = case["kw"].get("vdim", e)
    bf = case["kw"].get("batch_first", False)
    unb = case.get("unbatched", False)

    def mk(l, d):
        shape = (l, d) if unb else ((n, l, d) if bf else (l, n, d))
        return torch.randn(shape, dtype=torch.float64, generator=gen).requires_grad_()

    q, k, v = mk(lq, e), mk(s, kdim), mk(s, vdim)
    attn_mask = kpm = None
    am = case.get("attn_mask")
    if am == "bool_causal":
        attn_mask = torch.ones(lq, s, dtype=torch.bool).triu(1)
    elif am == "float_3d":
        attn_mask = torch.randn((n * 4, lq, s), dtype=torch.float64, generator=gen)
    elif am == "float_2d":
        attn_mask = torch.randn((lq, s), dtype=torch.float64, generator=gen)
    if case.get("kpm") == "bool":
        kpm = torch.rand((n, s), generator=gen) < 0.3
        kpm[:, 0] = False  # no query loses every key (torch would give NaN)
    elif case.get("kpm") == "float":
        kpm = torch.randn((n, s), dtype=torch.float64, generator=gen)
    return q, k, v, attn_mask, kpm


@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch(name, direction, gen):
    case = CASES[name]
    e, heads = 32, 4
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    theirs = torch.nn.MultiheadAttention(e, heads, dtype=torch.float64, **case["kw"])
    ours = pyattn.nn.MultiheadAttention(e, heads, dtype=torch.float64, **case["kw"])
    if direction == "torch_to_ours":
        ours.load_state_dict(theirs.state_dict(), strict=True)
    else:
        theirs.load_state_dict(ours.state_dict(), strict=True)
    assert list(ours.state_dict()) == list(theirs.state_dict())

    q, k, v, attn_mask, kpm = _inputs(case, e, gen)
    kw = dict(key_padding_mask=kpm, attn_mask=attn_mask, need_weights=case["need_weights"],
              average_attn_weights=case.get("average", True))
    out_o, w_o = ours(q, k, v, **kw)
    out_t, w_t = theirs(q, k, v, **kw)
    assert out_o.shape == out_t.shape
    assert_close(out_o, out_t, torch.float64, msg=f"{name} out")
    if case["need_weights"]:
        assert w_o.shape == w_t.shape
        assert_close(w_o, w_t, torch.float64, msg=f"{name} weights")
    else:
        assert w_o is None and w_t is None

    dy = torch.randn(out_t.shape, dtype=torch.float64, generator=gen)
    params_o = [p for _, p in sorted(ours.named_parameters())]
    params_t = [p for _, p in sorted(theirs.named_parameters())]
    g_o = torch.autograd.grad(out_o, [q, k, v] + params_o, dy)
    g_t = torch.autograd.grad(out_t, [q, k, v] + params_t, dy)
    names = ["q", "k", "v"] + [nm for nm, _ in sorted(ours.named_parameters())]
    for nm, a, b in zip(names, g_o, g_t):
        assert_close(a, b, torch.float64, msg=f"{name} grad {nm}")


def test_is_causal_needs_mask():
    m = pyattn.nn.MultiheadAttention(8, 2)
    x = torch.randn(3, 2, 8)
    with pytest.raises(RuntimeError, match="attn_mask"):
        m(x, x, x, is_causal=True)


def test_dropout_in_training_raises():
    m = pyattn.nn.MultiheadAttention(8, 2, dropout=0.1)
    x = torch.randn(3, 2, 8)
    with pytest.raises(NotImplementedError, match="dropout"):
        m(x, x, x)
    m.eval()
    out, _ = m(x, x, x, need_weights=False)
    assert out.shape == x.shape
