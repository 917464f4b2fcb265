from setuptools import find_packages, setup

setup(
    name="torch_aotcache",
    version="0.1.0",
    description="A verified, inspectable AOTAutograd cache for torch.compile",
    packages=find_packages(include=["torch_aotcache", "torch_aotcache.*"]),
    python_requires=">=3.10",
    # The supported releases (torch_aotcache/_compat.py SUPPORTED_RELEASES,
    # written by _compat.torch_requirement(); test/test_releases.py checks
    # it).  Without a torch installed, pip takes the newest of them.
    install_requires=["torch>=2.11,!=2.12.*,<2.16"],
    extras_require={
        # Everything the tests import: torch's testing helpers import numpy,
        # and the Redis tests need the client and zstd (they skip only when
        # the redis-server binary is missing).
        "test": [
            "pytest",
            "hypothesis>=6.100",
            "expecttest>=0.2",
            "numpy",
            "redis>=5",
            "zstandard",
            # The object-store tier's tests: the client, and an S3 API server
            # (moto's server mode) they start on loopback.
            "obstore>=0.6",
            "moto[server]>=5.1",
        ],
        "redis": ["redis>=5", "zstandard"],
        # The object-store tier (s3://, gs://, az://, file://).
        "object-store": ["obstore>=0.6", "zstandard"],
        # Models the benchmark builds from transformers configs (bert, gpt2).
        "bench": ["transformers", "matplotlib"],
        # The linters .ci/run runs: on the package (settings in
        # pyproject.toml) and on the GPU workflow (GitHub's schema, offline).
        "lint": ["ruff==0.17.6", "mypy==2.4.1", "check-jsonschema==0.39.0"],
    },
    entry_points={"console_scripts": ["torch-aotcache=torch_aotcache.cli.commands:main"]},
)
