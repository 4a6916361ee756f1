"""One construct per feature; each builds its resources in small _build_* helpers."""
