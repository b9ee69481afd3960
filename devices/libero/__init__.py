"""The LIBERO simulator (the paper's benchmark) as a camera kind and a robot kind, with the authors' evaluation
protocol and scripted experts. The simulator itself is an optional extra, imported lazily (suites.import_libero)."""
