"""Native (Cython) implementations of the per-packet work. Each module has a Python twin in media/."""
