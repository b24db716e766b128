"""A recipe for the CLI tests beside fp32: bf16 GEMM inputs and weights, under a name no real
recipe takes (registered per test by the ``bf16_recipe`` fixture of ``conftest.py``)."""

from lowbit.nn import Recipe
from lowbit.recipes._registry import OptimizerSpec, PaperRecipe

TEST_RECIPE = "_cli_test_bf16"

BF16 = PaperRecipe(name=TEST_RECIPE, title="test: bf16 inputs and weights", source="tests/cli",
                   recipe=Recipe(input="bf16", weight="bf16"),
                   optimizer=OptimizerSpec("sgd", {"lr": 0.05, "momentum": 0.9}))
