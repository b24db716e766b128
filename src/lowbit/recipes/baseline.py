"""The fp32 baseline: nothing quantized, plain SGD with momentum."""

from ._registry import OptimizerSpec, PaperRecipe, register

__all__ = ["FP32"]

FP32 = register(PaperRecipe(
    name="fp32",
    title="fp32 baseline: no quantization",
    source="-",
    optimizer=OptimizerSpec("sgd", {"lr": 0.1, "momentum": 0.9}),
    details=("every tensor in fp32",),
))
