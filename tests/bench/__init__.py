"""The benchmarks of `make bench`. Importing `local` first puts the handler code (`handlers`,
`streaming`) on sys.path, as in Lambda, so `python -m tests.bench.<name>` runs without PYTHONPATH."""

import local  # noqa: F401
