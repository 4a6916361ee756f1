"""Thin Lambda entry points: Powertools decorators and dispatch, nothing else."""
