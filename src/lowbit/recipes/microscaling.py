"""Block-scaled training recipes: ``mxfp8``, ``mxfp4`` (OCP MX) and ``nvfp4`` (NVIDIA).

Each GEMM quantizes its own operands with blocks along its own reduction axis
(``lowbit.nn._functions``): K for the forward GEMM, N for dgrad, the tokens M for wgrad.
``docs/recipes.md`` gives each recipe's formulas and sources.
"""

from __future__ import annotations

from ..formats import get
from ..nn import Recipe, Role
from ._registry import OptimizerSpec, PaperRecipe, register

__all__ = ["MXFP8", "MXFP4", "NVFP4", "NVFP4_WEIGHT"]

_SGD = (("lr", 0.1), ("momentum", 0.9))

#: NVFP4 with 16×16 tiles over the last two axes (a Linear weight's (N, K)): one UE4M3 scale
#: per tile under an fp32 tensor scale, so W (forward, blocks along K) and Wᵀ (dgrad, blocks
#: along N) round identically (arXiv 2509.25193, §4.3).
NVFP4_WEIGHT = get("block<e2m1fn,ue4m3,(16,16),(-2,-1),amax,tensor>")

MXFP8 = register(PaperRecipe(
    name="mxfp8",
    title="OCP MXFP8: e4m3 elements forward, e5m2 for gradients, e8m0 scale per 32",
    source=("OCP Microscaling Formats (MX) v1.0 §5-6 (FLOOR scale); Rouhani et al. 2023, "
            "'Microscaling Data Formats for Deep Learning' (arXiv 2310.10537), training with "
            "MXFP8; per-GEMM re-blocking as microsoft/microxcaling"),
    recipe=Recipe(input="mxfp8_e4m3", weight="mxfp8_e4m3", grad_output="mxfp8_e5m2"),
    optimizer=OptimizerSpec("sgd", _SGD),
    details=(
        "each block of 32 along the GEMM's reduction axis: X = 2^(floor(log2 amax) - "
        "emax_elem) in e8m0, P_i = Q_elem(V_i / X) RNE saturating",
        "W, A: e4m3fn elements (emax 8, max 448); E: e5m2 elements (emax 15, max 57344)",
        "every GEMM layer quantized; GEMM outputs, BatchNorm and updates in fp32",
    ),
))

MXFP4 = register(PaperRecipe(
    name="mxfp4",
    title="OCP MXFP4: e2m1 elements with an e8m0 scale per 32; gradients rounded stochastically",
    source=("OCP Microscaling Formats (MX) v1.0 §5-6; stochastic rounding of the backward "
            "operands after Tseng et al. 2025, 'Training LLMs with MXFP4' (arXiv 2502.20586)"),
    recipe=Recipe(input="mxfp4", weight="mxfp4",
                  grad_output=Role("mxfp4", rounding="stochastic"),
                  overrides={"first": None, "last": None}),
    optimizer=OptimizerSpec("sgd", _SGD),
    details=(
        "each block of 32 along the GEMM's reduction axis: X = 2^(floor(log2 amax) - 2) in "
        "e8m0, P_i = Q_e2m1(V_i / X) (values 0, 0.5, 1, 1.5, 2, 3, 4, 6), saturating",
        "W, A: round to nearest even; E: stochastic rounding (unbiased, E[Q(E)] = E)",
        "first and last GEMM layers in fp32",
    ),
))

NVFP4 = register(PaperRecipe(
    name="nvfp4",
    title="NVFP4 training: 16x16 weight tiles, RHT on wgrad inputs, SR gradients",
    source=("NVIDIA, 'Pretraining Large Language Models with NVFP4' (arXiv 2509.25193) §4; "
            "Transformer Engine NVFP4BlockScaling; NVFP4 numerics bit-exact with torchao's "
            "NVFP4 reference (lowbit preset 'nvfp4')"),
    recipe=Recipe(input="nvfp4", weight=NVFP4_WEIGHT,
                  grad_output=Role("nvfp4", rounding="stochastic"),
                  wgrad_transform="hadamard", overrides={"first": None, "last": None}),
    optimizer=OptimizerSpec("sgd", _SGD),
    details=(
        "two-level scale: S = amax(tensor) / (448 * 6) in fp32, per block "
        "X = Q_ue4m3((amax(block) / 6) / S), P_i = Q_e2m1(V_i / (S * X))",
        "A (blocks of 16 along the reduction axis), W (16x16 tiles: W and W^T alike): RNE",
        "E: stochastic rounding in both backward GEMMs",
        "wgrad: dW = Q(H g)^T Q(H x), H = blockdiag(H_16 diag(s) / 4) along the tokens, s a "
        "random sign vector fixed for the run (zero-padded to whole blocks of 16)",
        "first and last GEMM layers in fp32 (the paper keeps the last blocks in bf16); "
        "no-quantized-wgrad variant: recipe.replace(quantize_wgrad=False)",
    ),
))
