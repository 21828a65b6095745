"""The package's version, on the ground floor: ``cutover --version`` needs nothing else."""

__version__ = "0.1.0"
