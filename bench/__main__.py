"""``python -m bench`` (``make bench``): see the package docstring."""

from bench.run import main

if __name__ == "__main__":
    main()
