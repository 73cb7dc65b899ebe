"""`python -m wsi_aug` (also what `torchrun -m wsi_aug` runs)."""

from wsi_aug.cli import main

if __name__ == "__main__":
    main()
