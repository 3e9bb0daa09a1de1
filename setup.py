"""Builds the native media core (media/_native/*.pyx).

A failed native build fails the install: the server never falls back to the Python twin silently.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "media._native.rtp",
        ["media/_native/rtp.pyx"],
        extra_compile_args=["-O3"],
    ),
    Extension("media._native.rtcp", ["media/_native/rtcp.pyx"], extra_compile_args=["-O3"]),
    Extension("media._native.track", ["media/_native/track.pyx"], extra_compile_args=["-O3"]),
    Extension("media._native.depacketize", ["media/_native/depacketize.pyx"], extra_compile_args=["-O3"]),
    Extension("media._native.fanout", ["media/_native/fanout.pyx"], extra_compile_args=["-O3"]),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    ),
)
