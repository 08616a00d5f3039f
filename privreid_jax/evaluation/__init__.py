"""Evaluation: the ranking protocol (`ranking`) and evaluator objects (`reid`, ...)."""
