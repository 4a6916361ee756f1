"""CDK side: the per-environment stack and one construct per feature. Refers to handler code by path only."""
