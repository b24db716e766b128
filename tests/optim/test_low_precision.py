"""lowbit.optim.LowPrecision against hand-written fp32 updates and explicit lowbit.quantize
calls (tests/optim/_optim_reference.py), bit for bit; plus its API: closure, master copies,
state formats, parameter dtypes, groups, schedulers and argument errors."""

import hashlib
import math

import pytest
import torch

import lowbit as lb
from lowbit.optim import LowPrecision, derive_seed, register_state_names, state_names

from _optim_reference import Reference, seed_of

SEED = 1234
STEPS = 3
INNER = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def make_params(dtype=torch.float32, shapes=((5, 7), (5,))):
    g = torch.Generator().manual_seed(7)
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in shapes]


def grad_sequence(params, steps=STEPS, scale=1.0):
    g = torch.Generator().manual_seed(11)
    return [[torch.randn(p.shape, generator=g) * scale for p in params] for _ in range(steps)]


def bitwise_equal(a, b):
    a, b = a.detach().float(), b.detach().float()
    return a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


def representable(t, fmt):
    return bitwise_equal(lb.quantize(t, fmt), t)


def run_pair(kind, hp, steps=STEPS, loss_scale=None, **kw):
    """Train LowPrecision and the Reference on the same gradients; compare after each step."""
    params = make_params()
    scale = 1.0 if loss_scale is None else loss_scale
    ref = Reference(kind, hp, SEED, scale=scale, **kw)
    ref.init([p.detach().clone() for p in params])
    opt = LowPrecision(INNER[kind](params, **hp), seed=SEED, loss_scale=loss_scale, **kw)
    for i, p in enumerate(params):
        assert bitwise_equal(p, ref.params[i]), f"init param {i}"
    for grads in grad_sequence(params, steps):
        for p, g in zip(params, grads):
            p.grad = g * scale
        opt.step()
        ref.step([g * scale for g in grads])
        for i, p in enumerate(params):
            assert bitwise_equal(p, ref.params[i]), f"step {ref.t} param {i}"
            if i in ref.masters:
                assert bitwise_equal(opt.master_copies[i], ref.masters[i]), f"master {i}"
            for name, value in ref.states[i].items():
                if name != "t":
                    assert bitwise_equal(opt.state[p][name], value), f"state {name} of {i}"
    return opt, params


def ids(d):
    return ",".join(f"{k}={v}" for k, v in d.items()) or "fp32"


SGD_HP = [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.1, momentum=0.8, dampening=0.1, weight_decay=1e-2),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4),
]
SGD_FORMATS = [
    dict(),
    dict(weight="bf16"),
    dict(weight="e5m2", grad="e5m2", state="e6m9"),
    dict(weight="fixed<8,4>", grad="e4m3fn", rounding="stochastic"),
    dict(weight="e4m3fn", master="fp16", state="bf16",
         rounding={"grad": "stochastic", "state": "stochastic"}),
    dict(weight="mxfp4", grad="mxfp8_e5m2", update_rounding="nearest"),
]


@pytest.mark.parametrize("hp", SGD_HP, ids=ids)
@pytest.mark.parametrize("kw", SGD_FORMATS, ids=ids)
def test_sgd_matches_reference(hp, kw):
    run_pair("sgd", hp, **kw)


ADAM_HP = [dict(lr=1e-2), dict(lr=1e-2, weight_decay=1e-2, amsgrad=True),
           dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6)]
ADAM_FORMATS = [dict(), dict(weight="bf16", state="bf16"),
                dict(weight="e4m3fn", grad="e5m2", master="fp32",
                     state={"exp_avg": "e5m2", "exp_avg_sq": "e8m7", "max_exp_avg_sq": "e8m7"},
                     rounding="stochastic")]


@pytest.mark.parametrize("kind", ["adam", "adamw"])
@pytest.mark.parametrize("hp", ADAM_HP, ids=ids)
@pytest.mark.parametrize("kw", ADAM_FORMATS, ids=ids)
def test_adam_matches_reference(kind, hp, kw):
    run_pair(kind, hp, **kw)


@pytest.mark.parametrize("loss_scale", [1024.0, 1000.0])
def test_static_loss_scale_divides_gradients(loss_scale):
    run_pair("sgd", dict(lr=0.1, momentum=0.9), loss_scale=loss_scale, grad="e5m2",
             weight="bf16")


def test_fp32_everywhere_equals_plain_optimizer():
    a, b = make_params(), make_params()
    plain = torch.optim.AdamW(a, lr=1e-2)
    wrapped = LowPrecision(torch.optim.AdamW(b, lr=1e-2), weight="fp32", grad="fp32",
                           state="fp32", master="fp32", seed=0)
    for grads in grad_sequence(a, 4):
        for pa, pb, g in zip(a, b, grads):
            pa.grad, pb.grad = g.clone(), g.clone()
        plain.step()
        wrapped.step()
    assert all(bitwise_equal(x, y) for x, y in zip(a, b))


# -- state formats -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind,hp,state", [
    ("sgd", dict(lr=0.1, momentum=0.9), "e4m3fn"),
    ("adam", dict(lr=1e-2, amsgrad=True), "e5m2"),
    ("adamw", dict(lr=1e-2), {"exp_avg": "fixed<8,4>", "exp_avg_sq": "bf16"}),
])
def test_every_state_tensor_is_representable(kind, hp, state):
    params = make_params()
    opt = LowPrecision(INNER[kind](params, **hp), state=state, seed=1)
    for grads in grad_sequence(params, 3):
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
    names = state_names(opt.optimizer)
    checked = 0
    for p in params:
        for name, t in opt.state[p].items():
            if name == "step":
                assert t.dtype == torch.float32 and t.item() == 3  # never rounded
                continue
            fmt = state.get(name) if isinstance(state, dict) else state
            assert name in names
            if fmt is None:
                assert not representable(t, "e4m3fn")  # the unmapped moment stays fp32
            else:
                assert representable(t, fmt), (name, fmt)
                checked += 1
    assert checked >= len(params)


class Toy(torch.optim.Optimizer):
    """An unregistered optimizer: a same-shape buffer, a scalar counter and a non-tensor."""

    def __init__(self, params):
        super().__init__(params, dict(lr=0.5))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                s = self.state[p]
                s.setdefault("avg", torch.zeros_like(p)).mul_(0.5).add_(p.grad)
                s["count"] = s.get("count", torch.tensor(0.0)) + 1
                s["note"] = "x"
                p.sub_(s["avg"], alpha=group["lr"])


def test_unregistered_optimizer_single_format_applies_to_param_shaped_tensors():
    params = make_params(shapes=((4, 3),))
    opt = LowPrecision(Toy(params), state="e4m3fn", seed=0)
    assert state_names(opt.optimizer) is None
    for k in range(1, 4):
        params[0].grad = torch.randn(4, 3) / 3
        opt.step()
    s = opt.state[params[0]]
    assert representable(s["avg"], "e4m3fn") and s["count"].item() == 3 and s["note"] == "x"


def test_unregistered_optimizer_unknown_mapping_name_fails_at_first_step():
    params = make_params(shapes=((4, 3),))
    opt = LowPrecision(Toy(params), state={"avg": "bf16", "velocity": "bf16"})
    params[0].grad = torch.ones(4, 3)
    with pytest.raises(ValueError, match=r"velocity.*did not create.*'avg'"):
        opt.step()


def test_register_state_names():
    class Sub(Toy):
        pass
    register_state_names(Toy, ["avg"])
    try:
        assert state_names(Sub(make_params())) == ("avg",)
        with pytest.raises(ValueError, match=r"\['nope'\].*\['avg'\]"):
            LowPrecision(Sub(make_params()), state={"nope": "bf16"})
    finally:
        from lowbit.optim import _state_names
        del _state_names._NAMES[Toy]
    with pytest.raises(TypeError, match="optimizer_type"):
        register_state_names(int, ["a"])
    with pytest.raises(TypeError, match="names"):
        register_state_names(Toy, "avg")


# -- master copies, parameter dtypes -----------------------------------------------------------
def test_master_copy_semantics():
    params = make_params()
    opt = LowPrecision(torch.optim.SGD(params, lr=1e-3), weight="e4m3fn", master="e6m9",
                       update_rounding="stochastic", seed=3)
    grads = grad_sequence(params, 1)[0]
    before = {i: opt.master_copies[i].clone() for i in opt.master_copies}
    for p, g in zip(params, grads):
        p.grad = g
    opt.step()
    for i, p in enumerate(params):
        m = opt.master_copies[i]
        assert representable(m, "e6m9") and representable(p, "e4m3fn")
        assert bitwise_equal(p, lb.quantize(m, "e4m3fn"))  # weights are read off the master
        # The update is applied to the master, not to the fp8 weights: steps of lr·g are far
        # below an e4m3fn ulp, yet the master moved.
        assert not torch.equal(m, before[i])
        exact = before[i] - 1e-3 * grads[i]
        assert torch.all((m - exact).abs() <= exact.abs() * 2.0**-9)


def test_stochastic_update_is_unbiased_without_master():
    # 4096 weights at 1.0 in bf16; below 1 the bf16 spacing is 2^-8.  The exact new weight
    # 1 - 2^-10 lies a quarter of the way from 1 down to 1 - 2^-8, so stochastic rounding
    # picks 1 - 2^-8 with probability 1/4 (and 1 otherwise): unbiased, within 6 sigma.
    n = 4096
    p = torch.nn.Parameter(torch.ones(n))
    opt = LowPrecision(torch.optim.SGD([p], lr=1.0), weight="bf16", seed=5)
    p.grad = torch.full((n,), 2.0**-10)
    opt.step()
    lo, hi = 1 - 2.0**-8, 1.0
    assert set(p.detach().unique().tolist()) <= {lo, hi}
    frac = (p.detach() == lo).double().mean().item()
    sigma = math.sqrt(0.25 * 0.75 / n)
    assert abs(frac - 0.25) < 6 * sigma


def test_bf16_parameters_keep_dtype_and_round_stochastically():
    params = make_params(torch.bfloat16)
    ref = [p.detach().float().clone() for p in params]
    opt = LowPrecision(torch.optim.SGD(params, lr=0.1, momentum=0.9), seed=SEED)
    grads = grad_sequence(params, 2)
    bufs = [None, None]
    for t, gs in enumerate(grads):
        for p, g in zip(params, gs):
            p.grad = g.to(torch.bfloat16)
        opt.step()
        for i, (p, g) in enumerate(zip(params, gs)):
            g = g.to(torch.bfloat16).float()
            bufs[i] = g.clone() if bufs[i] is None else bufs[i].mul(0.9).add(g)
            ref[i] = lb.quantize(ref[i].add(bufs[i], alpha=-0.1), "bf16", rounding="stochastic",
                                 seed=seed_of(SEED, i, t, "update"))
            assert p.dtype == torch.bfloat16 and p.grad.dtype == torch.bfloat16
            assert bitwise_equal(p, ref[i])
            st = opt.state[p]["momentum_buffer"]
            assert st.dtype == torch.float32 and bitwise_equal(st, bufs[i])


def test_weight_format_must_fit_parameter_dtype():
    with pytest.raises(ValueError, match="weight=.*parameter 0 .*bfloat16"):
        LowPrecision(torch.optim.SGD(make_params(torch.bfloat16), lr=0.1), weight="e6m9")


# -- closure, groups, grads, schedulers --------------------------------------------------------
def test_closure_is_evaluated_once_and_its_gradients_used():
    torch.manual_seed(0)
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    models = [torch.nn.Linear(4, 2) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [LowPrecision(torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), weight="bf16",
                         grad="e5m2", loss_scale=256.0, seed=9) for m in models]
    calls = []

    def closure():
        calls.append(1)
        opts[0].zero_grad()
        loss = torch.nn.functional.mse_loss(models[0](x), y)
        opts[0].backward(loss)
        return loss

    for _ in range(3):
        loss0 = opts[0].step(closure)
        opts[1].zero_grad()
        loss1 = torch.nn.functional.mse_loss(models[1](x), y)
        opts[1].backward(loss1)
        assert opts[1].step() is None
        assert torch.equal(loss0, loss1)
    assert len(calls) == 3
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert bitwise_equal(a, b)


def test_parameters_without_gradient_are_untouched():
    params = make_params()
    opt = LowPrecision(torch.optim.Adam(params, lr=0.1), weight="bf16", seed=0)
    before = params[1].detach().clone()
    params[0].grad = torch.ones_like(params[0])
    opt.step()
    assert torch.equal(params[1], before) and params[1] not in opt.state


def test_grad_is_overwritten_with_unscaled_quantized_gradient():
    p = torch.nn.Parameter(torch.zeros(64))
    opt = LowPrecision(torch.optim.SGD([p], lr=0.0), grad="e4m3fn", loss_scale=8.0)
    g = torch.randn(64)
    p.grad = g * 8
    opt.step()
    assert bitwise_equal(p.grad, lb.quantize(g, "e4m3fn"))


def test_add_param_group_rounds_new_weights_and_makes_masters():
    params = make_params()
    opt = LowPrecision(torch.optim.SGD(params[:1], lr=0.1), weight="e5m2", master="bf16",
                       seed=SEED)
    extra = params[1].detach().clone()
    opt.add_param_group({"params": [params[1]], "lr": 0.5})
    assert len(opt.param_groups) == 2 and opt.optimizer.param_groups is opt.param_groups
    m = lb.quantize(extra, "bf16")
    assert bitwise_equal(opt.master_copies[1], m) and bitwise_equal(params[1], lb.quantize(m, "e5m2"))


def test_scheduler_zero_grad_and_repr():
    params = make_params()
    opt = LowPrecision(torch.optim.SGD(params, lr=1.0), weight="bf16", seed=0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    sched.step()
    assert opt.optimizer.param_groups[0]["lr"] == 0.5
    opt.zero_grad()
    assert all(p.grad is None for p in params)
    assert "LowPrecision(SGD" in repr(opt) and "weight='bf16'" in repr(opt)


# -- seeds -------------------------------------------------------------------------------------
def test_derive_seed_is_the_documented_blake2b():
    for args in [(0, 0, 0, "grad"), (2**64 - 1, 17, 123456, "state/exp_avg"), (5, 1, 2, "")]:
        msg = b"".join(v.to_bytes(8, "little") for v in args[:3]) + args[3].encode()
        want = int.from_bytes(hashlib.blake2b(msg, digest_size=8,
                                              person=b"lowbit.optim").digest(), "little")
        assert derive_seed(*args) == want
    seeds = {derive_seed(1, i, t, r) for i in range(3) for t in range(3)
             for r in ("grad", "update", "weight")}
    assert len(seeds) == 27
    with pytest.raises(ValueError, match="step"):
        derive_seed(1, 0, -1, "grad")
    with pytest.raises(TypeError, match="role"):
        derive_seed(1, 0, 0, 3)


def test_unseeded_wrapper_draws_its_seed_from_torch():
    torch.manual_seed(42)
    a = LowPrecision(torch.optim.SGD(make_params(), lr=0.1)).seed
    torch.manual_seed(42)
    b = LowPrecision(torch.optim.SGD(make_params(), lr=0.1)).seed
    assert a == b and 0 <= a < 2**64


# -- argument errors ---------------------------------------------------------------------------
def sgd():
    return torch.optim.SGD(make_params(), lr=0.1, momentum=0.9)


@pytest.mark.parametrize("make,exc,match", [
    (lambda: LowPrecision(make_params()), TypeError, "torch.optim.Optimizer"),
    (lambda: LowPrecision(LowPrecision(sgd())), TypeError, "already a LowPrecision"),
    (lambda: LowPrecision(torch.optim.LBFGS(make_params())), TypeError, "LBFGS"),
    (lambda: LowPrecision(sgd(), weight="e9m9x"), ValueError, "e9m9x"),
    (lambda: LowPrecision(sgd(), grad=3), TypeError, "grad must be a format"),
    (lambda: LowPrecision(sgd(), master=1.5), TypeError, "master must be a format"),
    (lambda: LowPrecision(sgd(), state={"exp_avg": "bf16"}), ValueError,
     r"\['exp_avg'\] that SGD does not keep; its state tensors are \['momentum_buffer'\]"),
    (lambda: LowPrecision(torch.optim.Adam(make_params()), state={"momentum": "bf16"}),
     ValueError, r"exp_avg', 'exp_avg_sq', 'max_exp_avg_sq'"),
    (lambda: LowPrecision(sgd(), state={"momentum_buffer": "nope"}), ValueError, "nope"),
    (lambda: LowPrecision(sgd(), rounding="round"), ValueError, "rounding must be one of"),
    (lambda: LowPrecision(sgd(), rounding={"master": "nearest"}), ValueError, "unknown roles"),
    (lambda: LowPrecision(sgd(), rounding={"grad": "x"}), ValueError, r"rounding\['grad'\]"),
    (lambda: LowPrecision(sgd(), update_rounding="sr"), ValueError, "update_rounding"),
    (lambda: LowPrecision(sgd(), loss_scale=0.0), ValueError, "loss_scale must be finite"),
    (lambda: LowPrecision(sgd(), loss_scale=float("inf")), ValueError, "loss_scale"),
    (lambda: LowPrecision(sgd(), loss_scale="static"), ValueError, "'dynamic'"),
    (lambda: LowPrecision(sgd(), loss_scale=True), TypeError, "loss_scale"),
    (lambda: LowPrecision(sgd(), seed=-1), ValueError, "seed"),
    (lambda: LowPrecision(sgd(), seed=1.0), TypeError, "seed"),
])
def test_bad_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_sparse_gradient_is_rejected():
    p = torch.nn.Parameter(torch.zeros(4, 3))
    opt = LowPrecision(torch.optim.SGD([p], lr=0.1))
    p.grad = torch.zeros(4, 3).to_sparse()
    with pytest.raises(TypeError, match="sparse"):
        opt.step()


# -- GPU: the same seeds give the same bits on CUDA (Triton kernels) as on the CPU ------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kw", [
    dict(weight="e5m2", grad="e4m3fn", state="e6m9", rounding="stochastic"),
    dict(weight="mxfp8_e4m3", master="bf16", state="bf16", loss_scale="dynamic"),
])
def test_cuda_matches_cpu(kw):
    # SGD's fp32 update (a multiply and fused multiply-adds) rounds alike on both devices, so
    # any difference would come from lowbit's roundings (Adam's lerp/sqrt/div may not).
    kind, hp = "sgd", dict(lr=0.05, momentum=0.9, foreach=False)
    runs = []
    for device in ("cpu", "cuda"):
        params = [torch.nn.Parameter(p.detach().to(device)) for p in make_params()]
        opt = LowPrecision(INNER[kind](params, **hp), seed=SEED, **kw)
        for grads in grad_sequence(params, 3):
            for p, g in zip(params, grads):
                p.grad = g.to(device) * (opt.loss_scale or 1.0)
            opt.step()
        runs.append([p.detach().cpu() for p in params])
    for a, b in zip(*runs):
        assert bitwise_equal(a, b)
