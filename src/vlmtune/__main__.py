"""``python -m vlmtune``: the same CLI, so launchers that start a module work, e.g.
``accelerate launch -m vlmtune train ...`` or ``torchrun --nproc_per_node 4 -m vlmtune train ...``."""

from vlmtune.cli import main

if __name__ == "__main__":
    main()
