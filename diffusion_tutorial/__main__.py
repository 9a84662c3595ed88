"""``python -m diffusion_tutorial train|sample``: see :mod:`diffusion_tutorial.cli`."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
