"""Paper recipes as named, printable presets: ``lowbit.recipes.get("hfp8")``.

Each is a ``PaperRecipe`` (``lowbit.recipes._registry``): a ``lowbit.nn.Recipe`` for the layers,
the paper's optimizer with its ``LowPrecision`` options, and the optional ActNN level;
``recipe.prepare(model, seed=...)`` applies it.  ``names()`` lists them; ``docs/recipes.md``
gives every formula with its source.
"""

from ._registry import (OptimizerSpec, PaperRecipe, Prepared, all_recipes, get, names, register,
                        register_optimizer)
# Each module registers its recipes (and WAGE's quantizers and optimizers) on import, in
# the order `names()` lists them.
from . import baseline, float8, microscaling, wage, wageubn, actnn  # noqa: F401,E402,I001

__all__ = ["PaperRecipe", "Prepared", "OptimizerSpec", "register", "register_optimizer",
           "get", "names", "all_recipes"]
