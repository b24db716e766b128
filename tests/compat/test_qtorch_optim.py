"""lowbit.compat.qtorch's OptimLP and lower/sequential_lower: QPyTorch 0.3 behaviour (against a
hand-written oracle of its documented step, and against the real qtorch.optim where it is
installed), and each QPyTorch bug the docstrings say is fixed."""

import copy
import inspect
import io
import warnings

import pytest
import torch
from torch import nn

import lowbit as lb
from lowbit.compat.qtorch import (FixedPoint, FloatingPoint, OptimLP, lower, sequential_lower)
from lowbit.compat.qtorch.auto_low import LAYER_TYPES
from lowbit.compat.qtorch.quant import Quantizer, quantizer


def q_nearest(exp, man):
    return quantizer(forward_number=FloatingPoint(exp, man), forward_rounding="nearest")


def fmt(exp, man):
    return FloatingPoint(exp, man).lowbit_format


def bits_equal(a, b):
    return torch.equal(a.detach().float().view(torch.int32), b.detach().float().view(torch.int32))


def make_params(shapes=((4, 6), (4,))):
    g = torch.Generator().manual_seed(3)
    return [nn.Parameter(torch.randn(s, generator=g)) for s in shapes]


def grads(params, steps, seed=5):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(p.shape, generator=g) for p in params] for _ in range(steps)]


# -- QPyTorch's step, as a hand-written oracle -------------------------------------------------
def oracle_sgd(params, gs, lr, mom, scale, wq, gq, mq, aq):
    """QPyTorch's documented order on plain tensors: g = gq(g·s); w = acc; SGD; acc = aq(w);
    w = wq(acc); buf = mq(buf)."""
    w = [p.detach().clone() for p in params]
    acc = [p.detach().clone() for p in params]
    buf = [None] * len(w)
    for step in gs:
        for i, g in enumerate(step):
            g = lb.quantize(g * scale, gq, rounding="nearest") if gq else g * scale
            x = acc[i] if aq else w[i]
            buf[i] = g.clone() if buf[i] is None else buf[i].mul(mom).add(g)
            x = x.add(buf[i], alpha=-lr)
            if aq:
                acc[i] = lb.quantize(x, aq)
                x = acc[i]
            w[i] = lb.quantize(x, wq) if wq else x
            if mq:
                buf[i] = lb.quantize(buf[i], mq)
    return w, acc, buf


@pytest.mark.parametrize("wq,gq,mq,aq,scale", [
    ((5, 2), (5, 2), (6, 9), (6, 9), 1.0),
    ((5, 2), None, None, None, 1 / 64),
    (None, (4, 3), (6, 9), None, 0.5),
    ((4, 3), None, None, (8, 7), 1.0),
])
def test_sgd_step_matches_qpytorch_order(wq, gq, mq, aq, scale):
    params = make_params()
    mk = (lambda e: q_nearest(*e) if e else None)
    opt = OptimLP(torch.optim.SGD(params, lr=0.1, momentum=0.9), weight_quant=mk(wq),
                  grad_scaling=scale, grad_quant=mk(gq), momentum_quant=mk(mq), acc_quant=mk(aq))
    gs = grads(params, 3)
    want_w, want_acc, want_buf = oracle_sgd(
        params, gs, 0.1, 0.9, scale, *(fmt(*e) if e else None for e in (wq, gq, mq, aq)))
    for step in gs:
        for p, g in zip(params, step):
            p.grad = g.clone()
        opt.step()
    for i, p in enumerate(params):
        assert bits_equal(p, want_w[i])
        assert bits_equal(opt.state[p]["momentum_buffer"], want_buf[i])
        if aq:
            assert bits_equal(opt.weight_acc[p], want_acc[i])


def test_grad_scaling_applies_without_grad_quant():
    # QPyTorch bug: grad_scaling was ignored unless grad_quant was given.
    p = nn.Parameter(torch.zeros(3))
    opt = OptimLP(torch.optim.SGD([p], lr=1.0), grad_scaling=0.25)
    p.grad = torch.tensor([4.0, 8.0, -2.0])
    opt.step()
    assert p.tolist() == [-1.0, -2.0, 0.5] and p.grad.tolist() == [1.0, 2.0, -0.5]


def test_closure_is_passed_on():
    # QPyTorch bug: the closure was dropped and step returned None.
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    opt = OptimLP(torch.optim.SGD(net.parameters(), lr=0.1),
                  grad_quant=q_nearest(5, 2), weight_quant=q_nearest(5, 2))
    x, calls = torch.randn(8, 3), []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = net(x).pow(2).mean()
        loss.backward()
        return loss

    w = net.weight.detach().clone()
    loss = opt.step(closure)
    assert calls == [1] and isinstance(loss, torch.Tensor)
    g = lb.quantize(net.weight.grad, fmt(5, 2))  # grads the closure made, then quantized
    assert bits_equal(net.weight.grad, g)
    assert bits_equal(net.weight, lb.quantize(w.add(g, alpha=-0.1), fmt(5, 2)))


def test_state_dict_holds_state_and_accumulators_and_resumes_exactly():
    # QPyTorch bug: OptimLP.state_dict() was empty, so momentum and accumulators were lost.
    def build(params):
        return OptimLP(torch.optim.SGD(params, lr=0.05, momentum=0.9), weight_quant=q_nearest(5, 2),
                       grad_quant=q_nearest(5, 2), momentum_quant=q_nearest(6, 9),
                       acc_quant=q_nearest(6, 9))
    a = make_params()
    opt = build(a)
    gs = grads(a, 5)

    def run(params, o, steps):
        for step in steps:
            for p, g in zip(params, step):
                p.grad = g.clone()
            o.step()
    run(a, opt, gs[:2])
    buf = io.BytesIO()
    torch.save({"params": [p.detach() for p in a], "opt": opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    assert set(ckpt["opt"]) == {"optim", "weight_acc"} and set(ckpt["opt"]["weight_acc"]) == {0, 1}
    assert len(ckpt["opt"]["optim"]["state"]) == 2
    run(a, opt, gs[2:])
    b = [nn.Parameter(torch.zeros_like(p)) for p in a]
    opt2 = build(b)
    with torch.no_grad():
        for p, saved in zip(b, ckpt["params"]):
            p.copy_(saved)
    opt2.load_state_dict(ckpt["opt"])
    run(b, opt2, gs[2:])
    for p, q in zip(a, b):
        assert bits_equal(p, q) and bits_equal(opt.weight_acc[p], opt2.weight_acc[q])
        assert bits_equal(opt.state[p]["momentum_buffer"], opt2.state[q]["momentum_buffer"])


@pytest.mark.parametrize("cls", [torch.optim.Adam, torch.optim.AdamW])
def test_adam_amsgrad_buffers_are_quantized(cls):
    params = make_params()
    opt = OptimLP(cls(params, lr=1e-2, amsgrad=True), momentum_quant=q_nearest(5, 2))
    for step in grads(params, 2):
        for p, g in zip(params, step):
            p.grad = g
        opt.step()
    for p in params:
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            t = opt.state[p][key]
            assert bits_equal(t, lb.quantize(t, fmt(5, 2))), key
        assert opt.state[p]["step"].item() == 2


def test_missing_grads_and_state_are_skipped():
    # QPyTorch bug: None gradients and parameters without state raised.
    params = make_params()
    opt = OptimLP(torch.optim.SGD(params, lr=0.1, momentum=0.9), grad_quant=q_nearest(5, 2),
                  momentum_quant=q_nearest(5, 2), grad_scaling=2.0)
    params[0].grad = torch.ones_like(params[0])
    opt.step()
    assert params[1].grad is None and params[1] not in opt.state
    assert params[0].grad.unique().tolist() == [2.0]


def test_add_param_group_creates_accumulators_and_groups_stay_live():
    params = make_params()
    inner = torch.optim.SGD(params[:1], lr=0.1)
    opt = OptimLP(inner, acc_quant=q_nearest(8, 7))
    opt.add_param_group({"params": [params[1]]})
    assert params[1] in opt.weight_acc
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    inner.load_state_dict(inner.state_dict())  # replaces inner.param_groups
    assert opt.param_groups is inner.param_groups and opt.optim is inner
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    opt.step()
    sched.step()
    assert inner.param_groups[0]["lr"] == pytest.approx(0.01)


def test_parameters_updated_in_place():
    p = nn.Parameter(torch.randn(6))
    view = p.data[:3]
    opt = OptimLP(torch.optim.SGD([p], lr=0.1), weight_quant=q_nearest(5, 2),
                  acc_quant=q_nearest(8, 7))
    p.grad = torch.ones(6)
    opt.step()
    assert torch.equal(view, p.detach()[:3])


def test_stochastic_quantizers_reproducible_under_manual_seed():
    def run():
        torch.manual_seed(0)
        params = make_params()
        q = quantizer(forward_number=FloatingPoint(5, 2))
        opt = OptimLP(torch.optim.SGD(params, lr=0.1, momentum=0.9), weight_quant=q,
                      grad_quant=q, momentum_quant=q, acc_quant=q)
        for step in grads(params, 2):
            for p, g in zip(params, step):
                p.grad = g
            opt.step()
        return params
    for a, b in zip(run(), run()):
        assert bits_equal(a, b)


def test_optimlp_signature_and_repr():
    sig = inspect.signature(OptimLP)
    assert list(sig.parameters) == ["optim", "weight_quant", "grad_scaling", "grad_quant",
                                    "momentum_quant", "acc_quant"]
    assert sig.parameters["grad_scaling"].default == 1.0
    opt = OptimLP(torch.optim.SGD(make_params(), lr=0.1))
    assert repr(opt).startswith("LP Optimizer: SGD (")
    assert isinstance(opt, torch.optim.Optimizer)


class Unregistered(torch.optim.Optimizer):
    def __init__(self, params):
        super().__init__(params, {})

    def step(self, closure=None):
        return None


@pytest.mark.parametrize("make,exc,match", [
    (lambda: OptimLP(make_params()), TypeError, "torch.optim.Optimizer"),
    (lambda: OptimLP(OptimLP(torch.optim.SGD(make_params(), lr=0.1))), TypeError, "already"),
    (lambda: OptimLP(torch.optim.LBFGS(make_params())), TypeError, "LBFGS"),
    (lambda: OptimLP(torch.optim.SGD(make_params(), lr=0.1), grad_scaling=0.0), ValueError,
     "positive"),
    (lambda: OptimLP(torch.optim.SGD(make_params(), lr=0.1), grad_scaling="1"), TypeError,
     "grad_scaling"),
    (lambda: OptimLP(torch.optim.SGD(make_params(), lr=0.1), weight_quant=FixedPoint(8, 4)),
     TypeError, "weight_quant must be a callable"),
    (lambda: OptimLP(Unregistered(make_params()), momentum_quant=q_nearest(5, 2)), ValueError,
     "register_state_names"),
])
def test_optimlp_bad_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_optimlp_load_refuses_other_dicts():
    params = make_params()
    opt = OptimLP(torch.optim.SGD(params, lr=0.1), acc_quant=q_nearest(8, 7))
    with pytest.raises(ValueError, match="keys 'optim' and 'weight_acc'"):
        opt.load_state_dict(opt.optim.state_dict())
    plain = OptimLP(torch.optim.SGD(params, lr=0.1)).state_dict()
    with pytest.raises(ValueError, match="acc_quant set on both"):
        opt.load_state_dict(plain)


@pytest.fixture(scope="module")
def real_optim():
    # qtorch.optim imports only torch (no C++ build), so this runs in the fast tier.
    pytest.importorskip("qtorch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from qtorch.optim import OptimLP as Real
    return Real


def test_matches_real_qtorch_optimlp(real_optim):
    # Outside its bugs (gradient quantizer set, no closure, no checkpoint), QPyTorch's
    # OptimLP and ours run the same step: driven by the same (deterministic) quantizers,
    # they agree bit for bit.
    for cls, kw in [(torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
                    (torch.optim.Adam, dict(lr=0.01))]:
        a, b = make_params(), make_params()
        quants = dict(weight_quant=q_nearest(5, 2), grad_quant=q_nearest(5, 2),
                      momentum_quant=q_nearest(6, 9), acc_quant=q_nearest(6, 9))
        ours = OptimLP(cls(a, **kw), grad_scaling=0.5, **quants)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = real_optim(cls(b, **kw), grad_scaling=0.5, **quants)
        for step in grads(a, 3):
            for p, q, g in zip(a, b, step):
                p.grad, q.grad = g.clone(), g.clone()
            ours.step()
            theirs.step()
        for p, q in zip(a, b):
            assert bits_equal(p, q), cls.__name__


# -- lower / sequential_lower ------------------------------------------------------------------
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        x = self.pool(self.act(self.bn(self.conv(x))))
        return self.fc(x.flatten(1))


def outputs(model, x):
    got = {}
    handles = [m.register_forward_hook(lambda m, a, o, n=n: got.__setitem__(n, o))
               for n, m in model.named_modules() if n]
    model(x)
    for h in handles:
        h.remove()
    return got


@pytest.mark.parametrize("layer_types,lowered", [
    (["conv"], {"conv"}), (["linear"], {"fc"}), (["conv", "linear"], {"conv", "fc"}),
    (["normalization", "activation", "pool"], {"bn", "act", "pool"}), ([], set()),
])
def test_lower_quantizes_outputs_of_chosen_types(layer_types, lowered):
    torch.manual_seed(0)
    net = Net()
    x = torch.randn(5, 1, 8, 8)
    number = FloatingPoint(4, 2)
    assert lower(net, layer_types, forward_number=number, forward_rounding="nearest") is net
    got = outputs(net, x)  # hooks registered after lower's see the quantized outputs
    for name, out in got.items():
        on_grid = bits_equal(out, lb.quantize(out, number.lowbit_format))
        assert on_grid == (name in lowered), name


def test_lower_quantizes_errors_in_backward():
    torch.manual_seed(0)
    lin = nn.Linear(6, 5)
    x = torch.randn(7, 6)
    back = FloatingPoint(5, 2)
    model = lower(nn.Sequential(lin, nn.Tanh()), ["linear"], backward_number=back,
                  backward_rounding="nearest")
    model(x).pow(3).sum().backward()
    y = (x @ lin.weight.T + lin.bias).detach()
    err = 3 * torch.tanh(y) ** 2 * (1 - torch.tanh(y) ** 2)  # dL/dy before quantization
    err_q = lb.quantize(err, back.lowbit_format)
    torch.testing.assert_close(lin.weight.grad, err_q.T @ x, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(lin.bias.grad, err_q.sum(0), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(err_q, err)


class MyLinear(nn.Linear):
    def forward(self, x, *, scale=1.0):
        return super().forward(x) * scale


def test_lower_fixes_qpytorch_deepcopy_pickle_kwargs_subclass_and_tuples():
    torch.manual_seed(0)
    model = nn.Sequential(MyLinear(4, 4))
    number = FloatingPoint(3, 1)
    lower(model, ["linear"], forward_number=number, forward_rounding="nearest")
    x = torch.randn(3, 4)
    y = model[0](x, scale=3.0)  # keyword arguments reach the module
    assert bits_equal(y, lb.quantize(y, number.lowbit_format))
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin[0].weight.mul_(2)
    assert not torch.equal(twin(x), model(x))  # the copy computes with its own weights
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    assert torch.equal(torch.load(buf, weights_only=False)(x), model(x))
    pool = lower(nn.MaxPool1d(2, return_indices=True), ["pool"], forward_number=number,
                 forward_rounding="nearest")
    values, idx = pool(torch.randn(2, 3, 8))
    assert idx.dtype == torch.int64
    assert bits_equal(values, lb.quantize(values, number.lowbit_format))


def test_sequential_lower_copies_and_wraps_leaves():
    torch.manual_seed(0)
    net = Net()
    x = torch.randn(2, 1, 8, 8)
    out = sequential_lower(net, ["conv", "linear"], forward_number=FloatingPoint(5, 2),
                           forward_rounding="nearest")
    assert isinstance(out.conv, nn.Sequential) and isinstance(out.conv[1], Quantizer)
    assert out.conv[1] is out.fc[1] and not isinstance(net.conv, nn.Sequential)
    lowered = lower(copy.deepcopy(net), ["conv", "linear"], forward_number=FloatingPoint(5, 2),
                    forward_rounding="nearest")
    assert torch.equal(out(x), lowered(x))
    shared = nn.Linear(2, 2)
    holder = nn.Module()
    holder.a, holder.b = shared, shared
    wrapped = sequential_lower(holder, ["linear"])
    assert wrapped.a is wrapped.b and isinstance(wrapped.a, nn.Sequential)


def test_layer_types_are_qpytorchs():
    assert list(LAYER_TYPES) == ["conv", "linear", "pool", "pad", "activation", "normalization",
                                 "dropout", "loss"]
    assert nn.Unfold in LAYER_TYPES["conv"] and nn.Bilinear in LAYER_TYPES["linear"]
    assert nn.CrossEntropyLoss in LAYER_TYPES["loss"]
    assert nn.LayerNorm in LAYER_TYPES["normalization"]
    assert not any(issubclass(c, (nn.RNNBase, nn.Embedding, nn.MultiheadAttention))
                   for cs in LAYER_TYPES.values() for c in cs)
    for fn in (lower, sequential_lower):
        assert list(inspect.signature(fn).parameters) == [
            "model", "layer_types", "forward_number", "backward_number", "forward_rounding",
            "backward_rounding"]


@pytest.mark.parametrize("call,exc,match", [
    (lambda: lower(Net(), "conv"), TypeError, "list of layer-type names"),
    (lambda: lower(Net(), ["convolution"]), ValueError, r"\['convolution'\].*'conv'"),
    (lambda: lower("model", ["conv"]), TypeError, "torch.nn.Module"),
    (lambda: lower(Net(), ["conv"], forward_rounding="up"), ValueError, "forward_rounding"),
    (lambda: sequential_lower(Net(), ["linear"], forward_number="e5m2"), TypeError,
     "forward_number"),
])
def test_lower_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.slow
def test_lower_matches_real_qtorch_lower():
    # Slow: qtorch.auto_low imports qtorch.quant, which JIT-compiles QPyTorch's C++ extension.
    pytest.importorskip("qtorch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import qtorch as real_numbers
        from qtorch.auto_low import lower as real_lower
    torch.manual_seed(0)
    ours, theirs = Net(), Net()
    theirs.load_state_dict(ours.state_dict())
    types = ["conv", "normalization", "linear"]
    lower(ours, types, forward_number=FloatingPoint(8, 7), forward_rounding="nearest")
    real_lower(theirs, types, forward_number=real_numbers.FloatingPoint(8, 7),
               forward_rounding="nearest")
    x = torch.randn(16, 1, 8, 8)
    a, b = outputs(ours, x), outputs(theirs, x)
    for name in a:
        # QPyTorch rounds bf16 ties away from zero, lowbit to even: a conv output can be an
        # exact tie (its low 16 bits 0x8000, about 1 in 65536; seed 0 has one), and there the
        # two must be adjacent bf16 values, lowbit's even and QPyTorch's the larger magnitude.
        ours_bits, theirs_bits = (t.detach().view(torch.int32) for t in (a[name], b[name]))
        diff = ours_bits != theirs_bits
        assert diff.sum() <= 2, (name, int(diff.sum()))
        o, t = ours_bits[diff], theirs_bits[diff]
        assert torch.equal((t - o).abs(), torch.full_like(o, 1 << 16)), name  # one bf16 ulp
        assert torch.all((o >> 16) & 1 == 0), name  # lowbit's is even
        assert torch.all(a[name][diff].abs() < b[name][diff].abs()), name  # QPyTorch: away
