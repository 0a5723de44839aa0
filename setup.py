"""Build uvxlan and its C fast path (cffi, out-of-line API mode)."""

from setuptools import find_packages, setup

setup(
    name="uvxlan",
    packages=find_packages(include=["uvxlan", "uvxlan.*"]),
    setup_requires=["cffi>=1.15"],
    cffi_modules=["csrc/build_ffi.py:ffibuilder"],
    install_requires=["cffi>=1.15", "uvloop", "pyroute2"],
    entry_points={"console_scripts": ["uvxlan = uvxlan.cli:main",
                                      "uvxlan-cni = uvxlan.cni:main"]},
    python_requires=">=3.11",
    zip_safe=False,
)
