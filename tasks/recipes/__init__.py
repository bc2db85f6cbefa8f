"""Recipes as data: one module per authors' repository (petlbench/recipe.py says what a recipe is)."""
