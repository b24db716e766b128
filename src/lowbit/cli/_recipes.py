"""``lowbit recipes [NAME]``: the registered paper recipes, or one recipe's description."""

from __future__ import annotations

import argparse

from ._train import get_recipe

__all__ = ["add_parser", "run"]


def add_parser(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("recipes", help="list the paper recipes, or describe one",
                       description="Without NAME: every registered recipe with its title. "
                       "With NAME: the recipe's formats, optimizer and sources.")
    p.add_argument("name", nargs="?", metavar="NAME", help="a recipe to describe")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .. import recipes

    if args.name is not None:
        print(get_recipe(args.name).describe())
        return 0
    every = recipes.all_recipes()
    width = max(len("recipe"), *(len(r.name) for r in every))
    print(f"{'recipe':<{width}}  title", f"{'-' * width}  -----", sep="\n")
    for r in every:
        print(f"{r.name:<{width}}  {r.title}")
    print("\nlowbit recipes NAME describes one; lowbit train --recipe NAME trains it.")
    return 0
