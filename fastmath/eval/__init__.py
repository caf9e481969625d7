"""Evaluation: the generation engine, prompt strategies, the program sandbox, and `evaluate` over datasets."""
