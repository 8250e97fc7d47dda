"""pyattn.nn.MultiheadAttention: a drop-in for torch.nn.MultiheadAttention. Loads torch's
state_dict (and torch loads its), and matches torch's outputs, attention weights and
gradients (inputs and parameters) in float64, across the module's options and masks."""

from __future__ import annotations

import pytest
import torch

import pyattn.nn
from conftest import assert_close
from pyattn.ops.attention import draw_dropout_seed

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


@pytest.mark.parametrize("with_kpm", [False, True], ids=["no_kpm", "kpm"])
@pytest.mark.parametrize("need_weights", [False, True], ids=["fused", "weights"])
def test_is_causal_hint_as_torch(need_weights, with_kpm, gen):
    """torch lets the is_causal hint replace attn_mask (SDPA's causal path) when there is
    no key padding mask and no weights to return, and uses the mask otherwise. Ours
    follows: a mask that is not causal shows which one was used."""
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    theirs = torch.nn.MultiheadAttention(16, 4, batch_first=True, dtype=torch.float64)
    ours = pyattn.nn.MultiheadAttention(16, 4, batch_first=True, dtype=torch.float64)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 11, 16, dtype=torch.float64, generator=gen).requires_grad_()
    not_causal = torch.rand(11, 11, generator=gen) < 0.3
    not_causal.fill_diagonal_(False)
    kpm = (torch.rand(3, 11, generator=gen) < 0.2) if with_kpm else None
    if kpm is not None:
        kpm[:, 0] = False
    kw = dict(attn_mask=not_causal, key_padding_mask=kpm, need_weights=need_weights, is_causal=True)
    out_o, w_o = ours(x, x, x, **kw)
    out_t, w_t = theirs(x, x, x, **kw)
    assert_close(out_o, out_t.detach(), torch.float64, msg="output")
    if need_weights:
        assert_close(w_o, w_t.detach(), torch.float64, msg="weights")
    (g_o,) = torch.autograd.grad(out_o.sum(), x)
    (g_t,) = torch.autograd.grad(out_t.sum(), x)
    assert_close(g_o, g_t, torch.float64, msg="dx")


def _pair(case, e, heads, gen, dropout):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    theirs = torch.nn.MultiheadAttention(e, heads, dropout=dropout, dtype=torch.float64, **case["kw"])
    ours = pyattn.nn.MultiheadAttention(e, heads, dropout=dropout, dtype=torch.float64, **case["kw"])
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


@pytest.mark.parametrize("average", [True, False])
@pytest.mark.parametrize("name", ["seq_first_plain", "float_mask_3d_bool_kpm", "bias_kv_zero_attn", "unbatched",
                                  "batch_first_bool_masks"])
def test_dropout_matches_torch_given_our_mask(name, average, gen, monkeypatch):
    """In training, torch's module (need_weights=True: softmax, F.dropout, bmm) with its
    F.dropout swapped for pyattn's mask must give our output, weights and gradients: the
    fused output and the returned weights drop the same probabilities, with torch's
    scaling, and the weights are those after dropout, as torch returns them."""
    case = CASES[name]
    e, heads, p = 32, 4, 0.3
    ours, theirs = _pair(case, e, heads, gen, p)
    q, k, v, attn_mask, kpm = _inputs(case, e, gen)
    kw = dict(key_padding_mask=kpm, attn_mask=attn_mask, need_weights=True, average_attn_weights=average)
    s = int(torch.randint(0, 2**62, (), generator=gen))
    torch.manual_seed(s)
    out_o, w_o = ours(q, k, v, **kw)
    torch.manual_seed(s)
    seed = draw_dropout_seed()  # the key ours drew

    calls = []

    def pyattn_mask_dropout(x, p=0.5, training=True, inplace=False):  # x: (N * heads, L, S)
        assert training and not inplace
        calls.append(p)
        return torch.ops.pyattn.attention_dropout(x.view(-1, heads, *x.shape[1:]), seed, p).view_as(x)

    monkeypatch.setattr(torch.nn.functional, "dropout", pyattn_mask_dropout)
    out_t, w_t = theirs(q, k, v, **kw)
    monkeypatch.undo()
    assert calls == [p], "torch's module did not drop through F.dropout once"
    assert_close(out_o, out_t, torch.float64, msg=f"{name} out")
    assert w_o.shape == w_t.shape
    assert_close(w_o, w_t, torch.float64, msg=f"{name} weights")
    if not average:  # per-head weights: about 30% of them are 0 (averages over heads rarely are)
        assert (w_o == 0).float().mean() > 0.15, "too few weights dropped"

    dy = torch.randn(out_t.shape, dtype=torch.float64, generator=gen)
    dw = torch.randn(w_t.shape, dtype=torch.float64, generator=gen)
    params_o = [p for _, p in sorted(ours.named_parameters())]
    params_t = [p for _, p in sorted(theirs.named_parameters())]
    g_o = torch.autograd.grad((out_o, w_o), [q, k, v] + params_o, (dy, dw))
    g_t = torch.autograd.grad((out_t, w_t), [q, k, v] + params_t, (dy, dw))
    names = ["q", "k", "v"] + [nm for nm, _ in sorted(ours.named_parameters())]
    for nm, a, b in zip(names, g_o, g_t):
        assert_close(a, b, torch.float64, msg=f"{name} grad {nm}")

    # the fused path (need_weights=False) drops what the weights path dropped
    torch.manual_seed(s)
    out_f, w_f = ours(q, k, v, **dict(kw, need_weights=False))
    assert w_f is None
    assert_close(out_f, out_o.detach(), torch.float64, msg=f"{name} fused out")


def test_dropout_training_only(gen):
    case = CASES["batch_first_bool_masks"]
    ours, theirs = _pair(case, 16, 2, gen, 0.5)
    q, k, v, attn_mask, kpm = _inputs(case, 16, gen)
    kw = dict(key_padding_mask=kpm, attn_mask=attn_mask, need_weights=False)
    first, _ = ours(q, k, v, **kw)
    second, _ = ours(q, k, v, **kw)
    assert not torch.equal(first, second), "training: a fresh mask per call"
    ours.eval()
    theirs.eval()
    for need_weights in (False, True):
        out_o, w_o = ours(q, k, v, **dict(kw, need_weights=need_weights))
        out_t, w_t = theirs(q, k, v, **dict(kw, need_weights=need_weights))
        assert_close(out_o, out_t, torch.float64, msg=f"eval out, need_weights={need_weights}")
        if need_weights:
            assert_close(w_o, w_t, torch.float64, msg="eval weights")


def test_bad_dropout_raises():
    m = pyattn.nn.MultiheadAttention(8, 2, dropout=1.5)
    x = torch.randn(3, 2, 8)
    with pytest.raises(ValueError, match="dropout_p must be in"):
        m(x, x, x)


@pytest.mark.parametrize("need_weights", [False, True])
def test_fully_masked_query_gives_zeros(need_weights, gen):
    """A batch element whose keys are all padded: torch gives NaN there, pyattn gives a
    zero attention result (so the output is the out_proj bias), zero weights and finite
    gradients; the other elements match torch."""
    e, heads, n, lq, s = 16, 2, 3, 5, 6
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    theirs = torch.nn.MultiheadAttention(e, heads, dtype=torch.float64, batch_first=True)
    ours = pyattn.nn.MultiheadAttention(e, heads, dtype=torch.float64, batch_first=True)
    ours.load_state_dict(theirs.state_dict())
    q = torch.randn((n, lq, e), dtype=torch.float64, generator=gen).requires_grad_()
    kv = torch.randn((n, s, e), dtype=torch.float64, generator=gen)
    kpm = torch.rand((n, s), generator=gen) < 0.3
    kpm[:, 0] = False
    kpm[1] = True  # element 1 sees no key
    out, w = ours(q, kv, kv, key_padding_mask=kpm, need_weights=need_weights)
    out_t, w_t = theirs(q, kv, kv, key_padding_mask=kpm, need_weights=need_weights)
    assert torch.equal(out[1], ours.out_proj.bias.expand(lq, e))
    keep = [0, 2]
    assert_close(out[keep], out_t[keep], torch.float64, msg="unmasked elements")
    if need_weights:
        assert torch.all(w[1] == 0)
        assert_close(w[keep], w_t[keep], torch.float64, msg="unmasked weights")
    out.sum().backward()
    assert torch.isfinite(q.grad).all() and torch.all(q.grad[1] == 0)


@pytest.mark.parametrize("average", [True, False])
@pytest.mark.parametrize("name", list(CASES))
def test_inference_with_weights_matches_torch(name, average, gen):
    """No grad, need_weights=True: the fused attention_with_weights kernel (torch runs
    its own inference path) gives torch's output and weights."""
    case = CASES[name]
    ours, theirs = _pair(case, 32, 4, gen, 0.0)
    ours.eval()
    theirs.eval()
    q, k, v, attn_mask, kpm = _inputs(case, 32, gen)
    kw = dict(key_padding_mask=kpm, attn_mask=attn_mask, need_weights=True, average_attn_weights=average)
    with torch.no_grad():
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            out_o, w_o = ours(q, k, v, **kw)
        out_t, w_t = theirs(q, k, v, **kw)
    assert "pyattn::attention_with_weights" in {evt.name for evt in prof.events()}, "not the fused path"
    assert out_o.shape == out_t.shape and w_o.shape == w_t.shape
    assert_close(out_o, out_t, torch.float64, msg=f"{name} out")
    assert_close(w_o, w_t, torch.float64, msg=f"{name} weights")


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("batch_first", [True, False])
def test_self_attention_one_tensor(batch_first, need_weights, grad, gen):
    """query is key is value: one packed input projection, heads as strided views of it;
    outputs, weights and gradients (inputs and parameters) match torch's."""
    e, heads, n, l = 32, 4, 3, 11
    ours, theirs = _pair(dict(kw=dict(batch_first=batch_first)), e, heads, gen, 0.0)
    x = torch.randn((n, l, e) if batch_first else (l, n, e), dtype=torch.float64, generator=gen)
    x.requires_grad_(grad)
    mask = torch.ones(l, l, dtype=torch.bool).triu(1)
    with torch.set_grad_enabled(grad):
        out_o, w_o = ours(x, x, x, attn_mask=mask, need_weights=need_weights)
        out_t, w_t = theirs(x, x, x, attn_mask=mask, need_weights=need_weights)
    assert_close(out_o, out_t, torch.float64, msg="out")
    if need_weights:
        assert_close(w_o, w_t, torch.float64, msg="weights")
    if not grad:
        return
    dy = torch.randn(out_t.shape, dtype=torch.float64, generator=gen)
    params_o = [p for _, p in sorted(ours.named_parameters())]
    params_t = [p for _, p in sorted(theirs.named_parameters())]
    for nm, a, b in zip(["x"] + [nm for nm, _ in sorted(ours.named_parameters())],
                        torch.autograd.grad(out_o, [x] + params_o, dy), torch.autograd.grad(out_t, [x] + params_t, dy)):
        assert_close(a, b, torch.float64, msg=f"grad {nm}")


def test_torch_compile_fullgraph(fresh_dynamo, gen):
    """Both weight paths trace whole: the fused inference op (need_weights=True, no grad)
    and the fused attention with its backward (need_weights=False)."""
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    m = pyattn.nn.MultiheadAttention(32, 4, batch_first=True).eval()
    x = torch.randn(2, 9, 32, generator=gen)
    with torch.no_grad():
        out_c, w_c = torch.compile(lambda t: m(t, t, t, need_weights=True), fullgraph=True)(x)
        out_e, w_e = m(x, x, x, need_weights=True)
    assert_close(out_c, out_e.double().numpy(), torch.float32, msg="compiled out")
    assert_close(w_c, w_e.double().numpy(), torch.float32, msg="compiled weights")
    xr = x.clone().requires_grad_()
    out_c, _ = torch.compile(lambda t: m(t, t, t, need_weights=False), fullgraph=True)(xr)
    (g_c,) = torch.autograd.grad(out_c.sum(), xr)
    xe = x.clone().requires_grad_()
    (g_e,) = torch.autograd.grad(m(xe, xe, xe, need_weights=False)[0].sum(), xe)
    assert_close(g_c, g_e.double().numpy(), torch.float32, msg="compiled grad")
