"""Train or evaluate a CoOp-family or LOREAL trainer with Dassl (``python train.py --help``).

The code lives in ``loreal.trainers.train`` (also ``python -m loreal.trainers.train``), so an
installed LOREAL and ``loreal demo`` run the same entry point as this file.
"""
from loreal.trainers.train import run

if __name__ == "__main__":
    run()
