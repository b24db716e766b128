"""The 8-bit and 16-bit floating-point training recipes: ``ibm8``, ``hfp8``, ``fp8``,
``fp8_delayed`` and ``bf16_sr``.

Roles are those of ``lowbit.nn.Recipe``: W = ``weight``, A = ``input`` (activations),
E = ``grad_output`` (errors), G = ``grad_weight`` (weight gradients).  ``Q_f(x)`` is
``lowbit.quantize(x, f)`` with round-to-nearest-even unless a rounding is named;
``docs/recipes.md`` gives each recipe's formulas and sources.
"""

from __future__ import annotations

from ..formats import FloatFormat, Specials
from ..nn import Recipe, Role, Scaling
from ..ops.accumulate.spec import Accumulate
from ._registry import OptimizerSpec, PaperRecipe, register

__all__ = ["IBM8", "HFP8", "FP8", "FP8_DELAYED", "BF16_SR", "E5M2_SAT", "E6M9", "E4M3_HFP8",
           "IBM_ACCUMULATE"]

#: IBM's FP8 (1, 5, 2), bias 15, saturating at ±57344 as QPyTorch's IBM8 example (its
#: floats reserve no Inf/NaN and saturate; the paper names no overflow rule).
E5M2_SAT = FloatFormat(5, 2, saturate=True)
#: IBM's 16-bit float (1, 6, 9), bias 31 (Wang et al. 2018, §3): accumulations, master
#: weights and momentum.
E6M9 = FloatFormat(6, 9)
#: HFP8's forward format (1, 4, 3) with exponent bias 11 (Sun et al. 2019; the bias as
#: quoted by the StableHLO E4M3B11FNUZ RFC, openxla/stablehlo#1308).  Every encoding is
#: finite and overflow saturates at ±30 (= 1.875 · 2^4): the same finite grid as
#: ml_dtypes' ``float8_e4m3b11fnuz`` (which also has no -0 and puts NaN at 0x80), whose
#: NaN-on-overflow a training run without scaling cannot use.
E4M3_HFP8 = FloatFormat(4, 3, bias=11, specials=Specials.NONE)
#: Chunk-based accumulation (Wang et al. 2018, §3.2): runs of 64 products summed in e6m9,
#: the chunk sums added into an e6m9 total, every addition rounded to nearest.
IBM_ACCUMULATE = Accumulate(acc=E6M9, chunk=64)

_SGD = (("lr", 0.1), ("momentum", 0.9))
_IBM_16BIT = {"input": E6M9, "weight": E6M9, "grad_output": E6M9, "grad_weight": E6M9}

IBM8 = register(PaperRecipe(
    name="ibm8",
    title="IBM FP8 training: e5m2 W/A/E/G, chunk-64 e6m9 accumulation, e6m9 SR updates",
    source=("Wang et al., NeurIPS 2018, 'Training Deep Neural Networks with 8-bit Floating "
            "Point Numbers' (arXiv 1812.08011), §3-4; no official code; optimizer settings "
            "and loss scale 1000 from QPyTorch's examples/IBM8"),
    recipe=Recipe(input=E5M2_SAT, weight=E5M2_SAT, grad_output=E5M2_SAT,
                  grad_weight=E5M2_SAT, accumulate=IBM_ACCUMULATE,
                  overrides={"first": _IBM_16BIT, "last": _IBM_16BIT}),
    optimizer=OptimizerSpec("sgd", _SGD, (
        ("weight", E6M9), ("state", E6M9), ("rounding", {"state": "stochastic"}),
        ("update_rounding", "stochastic"), ("loss_scale", 1000.0))),
    details=(
        "GEMM operands W, A, E and the weight gradient G: Q_e5m2(x) (1-5-2, bias 15, RNE, "
        "saturating at ±57344)",
        "every GEMM (forward, dgrad, wgrad): products exact, chunks of 64 summed in e6m9 "
        "(1-6-9, bias 31), chunk sums added in e6m9, RNE",
        "first and last GEMM layers: operands in e6m9 (the paper's 16-bit layers)",
        "SGD momentum 0.9: weights w and momentum v stored in e6m9 with stochastic rounding "
        "(w <- Q_e6m9^SR(w - lr v))",
        "static loss scale 1000 (loss * 1000 before backward, gradients / 1000 in fp32)",
    ),
))

HFP8 = register(PaperRecipe(
    name="hfp8",
    title="Hybrid FP8: (1-4-3, bias 11) forward, e5m2 backward, dynamic loss scaling",
    source=("Sun et al., NeurIPS 2019, 'Hybrid 8-bit Floating Point (HFP8) Training and "
            "Inference for Deep Neural Networks', §3; bias 11 as quoted by "
            "openxla/stablehlo#1308 (E4M3B11FNUZ); no official code"),
    recipe=Recipe(input=E4M3_HFP8, weight=E4M3_HFP8, grad_output="e5m2", grad_weight="e5m2",
                  overrides={"first": None, "last": None}),
    optimizer=OptimizerSpec("sgd", _SGD, (("loss_scale", "dynamic"),)),
    details=(
        "forward GEMM operands W, A: Q(x) onto (1-4-3) bias 11 (max 30, min subnormal "
        "2^-13), RNE, saturating",
        "backward E and weight gradient G: Q_e5m2(x) (IEEE-like, bias 15), RNE; overflow "
        "gives Inf, which the dynamic loss scale detects",
        "dynamic loss scale (GradScaler's rule: 2^16, x0.5 on Inf/NaN and skip, x2 after "
        "2000 finite steps)",
        "first and last GEMM layers, BatchNorm and accumulation in fp32; fp32 SGD update "
        "(the paper's 16-bit chunk accumulation and updates: see ibm8)",
    ),
))



def _fp8(history: int) -> Recipe:
    scaling = Scaling("tensor", history=history)
    return Recipe(input=Role("e4m3fn", scaling=scaling), weight=Role("e4m3fn", scaling=scaling),
                  grad_output=Role("e5m2", scaling=scaling),
                  overrides={"first": None, "last": None})


FP8 = register(PaperRecipe(
    name="fp8",
    title="FP8 with per-tensor dynamic scaling: e4m3fn forward, e5m2 gradients",
    source=("Micikevicius et al. 2022, 'FP8 Formats for Deep Learning' (arXiv 2209.05433), "
            "§4.3; torchao float8 training (tensorwise dynamic scaling) and NVIDIA Transformer "
            "Engine's Float8CurrentScaling"),
    recipe=_fp8(0),
    optimizer=OptimizerSpec("sgd", _SGD),
    details=(
        "each GEMM operand: s * Q(clamp(x / s, ±max)) with s = amax(|x|) / max over the "
        "tensor (current amax), RNE",
        "W, A: e4m3fn (max 448); E: e5m2 (max 57344); GEMM outputs and G in fp32",
        "first and last GEMM layers in fp32 (torchao's default filter skips GEMMs with dims "
        "not divisible by 16; Transformer Engine keeps the output layer in bf16)",
    ),
))

FP8_DELAYED = register(PaperRecipe(
    name="fp8_delayed",
    title="FP8 with delayed per-tensor scaling (amax history 1024)",
    source=("NVIDIA Transformer Engine DelayedScaling (fp8_format=HYBRID, "
            "amax_history_len=1024, amax_compute_algo='max', margin=0)"),
    recipe=_fp8(1024),
    optimizer=OptimizerSpec("sgd", _SGD),
    details=(
        "as fp8, but s = max(amax history of the previous 1024 calls) / max; the current amax "
        "is pushed after use (the first call uses its own amax)",
    ),
))

BF16_SR = register(PaperRecipe(
    name="bf16_sr",
    title="bf16 GEMM operands and bf16 weights with stochastic-rounded updates",
    source=("Zamirai et al. 2020, 'Revisiting BFloat16 Training' (arXiv 2010.06192): bf16 "
            "weights updated with stochastic rounding; Gupta et al., ICML 2015"),
    recipe=Recipe(input="bf16", weight="bf16", grad_output="bf16"),
    optimizer=OptimizerSpec("sgd", _SGD, (("weight", "bf16"),
                                          ("update_rounding", "stochastic"))),
    details=(
        "GEMM operands W, A, E: Q_bf16(x), RNE; fp32 accumulation",
        "weights stored in bf16: w <- Q_bf16^SR(w - lr v), rounding up with probability "
        "equal to the distance from the bf16 value below; momentum v in fp32",
    ),
))
