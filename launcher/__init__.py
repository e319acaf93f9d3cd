"""medsweep launcher: sweeps of Unsloth fine-tuning runs on Slurm (or this machine).

Importing this package never imports torch: the login node needs no GPU stack.
"""
