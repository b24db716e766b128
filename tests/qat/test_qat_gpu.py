"""QAT on a CUDA device: quantizers, observers and fused layers keep their state on the model's
device, gradients match the CPU ones, bypass stays bit-identical.  Marked ``gpu``; skipped
without CUDA.  Run: ``PYTHONPATH=src python -m pytest -q -m gpu tests/qat/test_qat_gpu.py``."""

import copy

import pytest
import torch

from _qat_models import MobileNetV2, ResNet18, randomize_bn
from lowbit.qat import (
    HistogramObserver, LSQQuantizer, QATConfig, affine_quantize, export_int, prepare, quant_mode,
    set_mode,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
CUDA = torch.device("cuda")


def test_affine_gradients_match_cpu():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 33, generator=g)
    s = torch.rand(64, generator=g) * 0.2 + 0.05
    up = torch.randn(64, 33, generator=g)
    grads = []
    for dev in ("cpu", CUDA):
        xs = x.to(dev).requires_grad_()
        ss = s.to(dev).requires_grad_()
        y = affine_quantize(xs, ss, torch.zeros(64, device=dev), -8, 7, axis=0, ste="clipped")
        y.backward(up.to(dev))
        grads.append((y.detach().cpu(), xs.grad.cpu(), ss.grad.cpu()))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
    assert torch.allclose(grads[0][2], grads[1][2], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [lambda: ResNet18(num_classes=10, width=32), MobileNetV2])
def test_prepare_train_and_bypass_on_cuda(make):
    torch.manual_seed(1)
    model = randomize_bn(make()).to(CUDA).eval()
    x = torch.randn(8, 3, 32, 32, device=CUDA)
    cfg = QATConfig(weight={"quantizer": "lsq", "bits": 4, "axis": 0},
                    activation={"quantizer": "lsq", "bits": 4})
    q = prepare(model, cfg, example_inputs=x[:1])
    assert all(t.device.type == "cuda" for t in q.parameters())
    q.train()
    q(x).square().mean().backward()
    q.eval()
    with quant_mode(q, "bypass"):
        assert torch.equal(q(x), copy.deepcopy(model)(x))
    set_mode(q, "eval")
    layers = export_int(q)
    assert all(v.weight.device.type == "cuda" for v in layers.values() if hasattr(v, "weight"))


def test_lazy_per_channel_scale_and_histogram_on_cuda():
    q = LSQQuantizer(4, axis=1)
    x = torch.randn(16, 8, device=CUDA)
    q(x).sum().backward()
    assert q.scale.device.type == "cuda" and q.scale.shape == (8,)
    h = HistogramObserver(bins=64)
    h(x)
    h(x * 3)
    lo, hi = h.bounds()
    assert hi.device.type == "cuda" and 0 < hi.item() <= float((x * 3).abs().max()) * 2
