"""The floating-point paper recipes (ibm8, hfp8, fp8, fp8_delayed, bf16_sr, mxfp8, mxfp4,
nvfp4): their quantizers against values computed by hand from each recipe's formulas, where
the quantization lands, and a few training steps on digits without NaN."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lowbit
import lowbit.nn as lnn
import lowbit.recipes as R
from lowbit.data import digits
from lowbit.nn import RoleQuantizer
from lowbit.ops.accumulate import gemm
from lowbit.ops.accumulate.spec import Accumulate
from lowbit.recipes.float8 import E4M3_HFP8, E5M2_SAT, E6M9, IBM_ACCUMULATE

FLOAT = ("ibm8", "hfp8", "fp8", "fp8_delayed", "bf16_sr", "mxfp8", "mxfp4", "nvfp4")


def _q(recipe_name, role, x, gemm_tag="forward", axis=-1, **kwargs):
    spec = getattr(R.get(recipe_name).recipe, role)
    return RoleQuantizer(spec, module="m", role=role, **kwargs)(x, gemm=gemm_tag, axis=axis)


def _t(*values):
    return torch.tensor(values, dtype=torch.float32)


def test_registered():
    assert set(FLOAT) <= set(R.names())


# -- ibm8 ------------------------------------------------------------------------------------
def test_ibm8_e5m2_and_e6m9_by_hand():
    # e5m2: spacing 0.25 on [1, 2); max 1.75 * 2^15 = 57344, saturating; min subnormal 2^-16
    x = _t(1.1, 1.2, -1.375, 1e6, -1e6, 2.0**-18, 3 * 2.0**-17)
    assert _q("ibm8", "input", x).tolist() == [1.0, 1.25, -1.5, 57344.0, -57344.0, 0.0,
                                              2.0**-15]
    # e6m9: spacing 2^-9 on [1, 2); ties to even
    y = lowbit.quantize(_t(1 + 2.0**-10, 1 + 3 * 2.0**-10, 2.0**33), E6M9)
    assert y.tolist() == [1.0, 1 + 2.0**-8, math.inf]


def test_ibm8_chunked_accumulation_avoids_swamping():
    # 2048 products of 1: sequential e6m9 sums stick at 1024 (1024 + 1 is a tie between 1024
    # and 1026 and rounds to the even 1024); chunks of 64 sum exactly to 2048.
    a, b = torch.ones(1, 2048), torch.ones(2048, 1)
    assert gemm(a, b, IBM_ACCUMULATE).item() == 2048.0
    assert gemm(a, b, Accumulate(acc=E6M9)).item() == 1024.0


def test_ibm8_layer_forward_is_the_chunked_gemm_of_quantized_operands():
    recipe = R.get("ibm8").recipe.replace(overrides=())
    m = lnn.convert(nn.Linear(80, 3, bias=False), recipe)
    x = torch.randn(4, 80) * 3
    expected = gemm(lowbit.quantize(x, E5M2_SAT), lowbit.quantize(m.weight.detach(), E5M2_SAT).t(),
                    IBM_ACCUMULATE)
    assert torch.equal(m(x), expected)


def test_ibm8_first_and_last_layers_in_e6m9():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    R.get("ibm8").prepare(model, seed=0)
    with lnn.trace() as events:
        model(torch.randn(4, 8)).sum().backward()
    fmt = {(e.module, e.role) for e in events if e.format == "e6m9"}
    assert {("0", "input"), ("4", "grad_weight")} <= fmt
    assert {e.format for e in events if e.module == "2"} == {"e5m2_sat"}
    assert {e.role for e in events if e.module == "2"} == {"input", "weight", "grad_output",
                                                          "grad_weight", "grad_bias"}


def test_ibm8_optimizer_rounds_weights_and_momentum_onto_e6m9():
    p = nn.Parameter(torch.randn(64))
    opt = R.get("ibm8").optimizer.build([p], seed=0)
    assert opt.loss_scale == 1000.0
    p.grad = torch.randn(64) * 1000
    opt.step()
    assert torch.equal(p.detach(), lowbit.quantize(p.detach(), E6M9))
    mom = opt.state[p]["momentum_buffer"]
    assert torch.equal(mom, lowbit.quantize(mom, E6M9))


# -- hfp8 ------------------------------------------------------------------------------------
def test_hfp8_forward_format_by_hand():
    # (1-4-3), bias 11: max 1.875 * 2^(15-11) = 30, min normal 2^-10, min subnormal 2^-13
    assert (E4M3_HFP8.max, E4M3_HFP8.min_normal, E4M3_HFP8.min_subnormal) == (30.0, 2.0**-10,
                                                                            2.0**-13)
    x = _t(1.0625, 1.1875, 29.0, 31.0, 100.0, -100.0, 2.0**-14, 1.5 * 2.0**-14)
    assert _q("hfp8", "weight", x).tolist() == [1.0, 1.25, 28.0, 30.0, 30.0, -30.0, 0.0,
                                               2.0**-13]


def test_hfp8_forward_format_matches_ml_dtypes_b11():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    import numpy as np

    x = torch.randn(4096) * torch.exp2(torch.randint(-14, 5, (4096,)).float())
    x = x.clamp(-30, 30)
    ours = lowbit.quantize(x, E4M3_HFP8)
    theirs = torch.from_numpy(x.numpy().astype(ml_dtypes.float8_e4m3b11fnuz).astype(np.float32))
    assert torch.equal(ours.abs(), theirs.abs())  # b11fnuz has no -0


def test_hfp8_backward_e5m2_overflows_to_inf_for_the_loss_scaler():
    assert _q("hfp8", "grad_output", _t(1e6, 1.1)).tolist() == [math.inf, 1.0]
    opt = R.get("hfp8").optimizer.build([nn.Parameter(torch.zeros(2))], seed=0)
    assert opt.loss_scale == 2.0**16


# -- fp8 -------------------------------------------------------------------------------------
def test_fp8_dynamic_tensor_scaling_by_hand():
    # amax 2 -> s = 2 / 448; x / s = (67.2, -224, 448); e4m3fn spacing 8 on [64, 128): 64
    x = _t(0.3, -1.0, 2.0)
    s = 2.0 / 448
    torch.testing.assert_close(_q("fp8", "input", x), _t(64 * s, -1.0, 2.0), rtol=0, atol=0)
    # e5m2 gradients: amax 3 -> s = 3 / 57344; x / s = 19114.67 -> spacing 4096 -> 20480
    g = _t(1.0, 3.0)
    torch.testing.assert_close(_q("fp8", "grad_output", g), _t(20480 * 3 / 57344, 3.0),
                               rtol=0, atol=0)


def test_fp8_delayed_uses_the_history_amax():
    q = RoleQuantizer(R.get("fp8_delayed").recipe.input, module="m", role="input")
    assert q(_t(4.0), gemm="forward").item() == 4.0
    # amax history 4 -> s = 4 / 448; 0.3 / s = 33.6 -> e4m3fn spacing 4 on [32, 64): 32
    assert q(_t(0.3), gemm="forward").item() == pytest.approx(32 * 4 / 448, rel=1e-7)
    assert _q("fp8", "input", _t(0.3)).item() == pytest.approx(0.3, rel=1e-7)


# -- bf16_sr ---------------------------------------------------------------------------------
def test_bf16_sr_update_is_stochastic_and_unbiased():
    p = nn.Parameter(torch.ones(20000))
    opt = R.get("bf16_sr").optimizer.build([p], lr=1.0, seed=3)
    # w - lr g = 1 - 2^-10 lies between 1 - 2^-8 and 1: down with probability 1/4
    p.grad = torch.full_like(p, 2.0**-10)
    opt.step()
    values = set(p.detach().unique().tolist())
    assert values == {1.0, 1 - 2.0**-8}
    down = (p.detach() < 1).float().mean().item()
    assert abs(down - 0.25) < 0.02  # 6.5 standard deviations of a binomial(20000, 1/4)
    assert _q("bf16_sr", "input", _t(1 + 2.0**-9)).item() == 1.0


# -- MX --------------------------------------------------------------------------------------
def test_mxfp8_block_by_hand():
    # amax 300: X = 2^(floor(log2 300) - 8) = 1; e4m3fn: 300 -> 288 (spacing 32), 0.01 ->
    # 5 * 2^-9 (subnormal spacing 2^-9)
    x = torch.zeros(32)
    x[:3] = _t(1.0, 300.0, 0.01)
    assert _q("mxfp8", "input", x)[:3].tolist() == [1.0, 288.0, 5 * 2.0**-9]
    # e5m2 gradient elements, emax 15: amax 3 -> X = 2^(1 - 15); 1.1 -> 1.0
    g = torch.zeros(32)
    g[:2] = _t(3.0, 1.1)
    assert _q("mxfp8", "grad_output", g)[:2].tolist() == [3.0, 1.0]


def test_mxfp4_block_by_hand_and_sr_gradients():
    # amax 6: X = 2^(2 - 2) = 1; e2m1 grid 0, 0.5, 1, 1.5, 2, 3, 4, 6
    x = torch.zeros(32)
    x[:4] = _t(6.0, 1.4, -0.7, 0.2)
    assert _q("mxfp4", "weight", x)[:4].tolist() == [6.0, 1.5, -0.5, 0.0]
    spec = R.get("mxfp4").recipe.grad_output
    assert spec.rounding is lowbit.Rounding.STOCHASTIC
    g = torch.zeros(64, 32)
    g[:, 0], g[:, 1] = 6.0, 2.5  # 2.5: halfway between 2 and 3
    q = RoleQuantizer(spec, module="m", role="grad_output")
    out = q(g, gemm="dgrad", axis=-1, global_seed=1, step=1)[:, 1]
    assert set(out.tolist()) == {2.0, 3.0}


def test_mx_blocks_follow_each_gemm_axis():
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    R.get("mxfp8").prepare(model, seed=0)
    with lnn.trace() as events:
        model(torch.randn(8, 64)).sum().backward()
    axes = {(e.module, e.role, e.gemm): e.format for e in events}
    assert axes[("0", "input", "forward")] == "mxfp8_e4m3"
    assert axes[("0", "input", "wgrad")] == "block<e4m3fn_sat,e8m0fnu,32,0,floor>"
    assert axes[("2", "grad_output", "dgrad")] == "mxfp8_e5m2"
    assert axes[("2", "weight", "dgrad")] == "block<e4m3fn_sat,e8m0fnu,32,0,floor>"


# -- nvfp4 -----------------------------------------------------------------------------------
def test_nvfp4_two_level_scale_by_hand():
    # S = 3 / (448 * 6); X = Q_ue4m3((3 / 6) / S) = 448; S * X = 0.5; P = (6, 1.4 -> 1.5)
    x = torch.zeros(16)
    x[:2] = _t(3.0, 0.7)
    assert _q("nvfp4", "input", x)[:2].tolist() == [3.0, 0.75]


def test_nvfp4_weight_tiles_quantize_w_and_wt_alike():
    w = torch.randn(32, 48) * torch.rand(32, 1) * 10
    fmt = R.get("nvfp4").recipe.weight.format
    assert fmt.block_size == (16, 16)
    q = RoleQuantizer(R.get("nvfp4").recipe.weight, module="m", role="weight")
    forward = q(w, gemm="forward", axis=-1)
    dgrad = q(w, gemm="dgrad", axis=0)
    assert torch.equal(forward, dgrad)
    assert torch.equal(lowbit.quantize(w.t().contiguous(), lowbit.formats.get(
        "block<e2m1fn,ue4m3,(16,16),(-2,-1),amax,tensor>")), forward.t())


def test_nvfp4_backward_uses_sr_and_the_hadamard_transform():
    r = R.get("nvfp4").recipe
    assert r.grad_output.rounding is lowbit.Rounding.STOCHASTIC
    assert r.wgrad_transform == lnn.WgradTransform("hadamard", 16)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                          nn.Linear(32, 4))
    R.get("nvfp4").prepare(model, seed=0)
    with lnn.trace() as events:
        model(torch.randn(20, 32)).sum().backward()
    wgrad = {(e.role, e.shape) for e in events if e.module == "2" and e.gemm == "wgrad"}
    assert ("input", (32, 32)) in wgrad  # 20 rows padded to 32 and transformed
    assert not [e for e in events if e.module in ("0", "4")]  # first and last in fp32


# -- training --------------------------------------------------------------------------------
def _cnn():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 16, 10))


def _train(name, model, x, y, steps):
    prepared = R.get(name).prepare(model, seed=0)
    opt = prepared.make_optimizer(model.parameters(), lr=0.05)
    losses = []
    for i in range(steps):
        idx = slice(32 * i, 32 * i + 32)
        with prepared.context():
            loss = F.cross_entropy(prepared.model(x[idx]), y[idx])
        opt.zero_grad()
        opt.backward(loss) if hasattr(opt, "backward") else loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", [n for n in FLOAT if n != "ibm8"])
def test_trains_digits_without_nan(name):
    d = digits()
    torch.manual_seed(0)
    model = _cnn()
    losses = _train(name, model, d.x_train, d.y_train, 6)
    assert all(math.isfinite(v) for v in losses)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert losses[-1] < losses[0]


def test_ibm8_trains_a_tiny_mlp_without_nan():
    # The chunked e6m9 accumulation runs the reference GEMM: a tiny model keeps it fast.
    d = digits(flat=True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                          nn.Linear(16, 10))
    losses = _train("ibm8", model, d.x_train, d.y_train, 3)
    assert all(math.isfinite(v) for v in losses)
    assert all(torch.isfinite(p).all() for p in model.parameters())
