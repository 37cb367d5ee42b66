"""nnunet-subfore: HU-based foreground masked image modeling for nnU-Net v2.

The library behind the trainers in ``trainers/`` (installed as ``nnunet_subfore.trainers``, the
folder that ``nnUNet_extTrainer`` points at; ``nnunet-subfore trainer-path`` prints it).
"""

__version__ = "0.1.0"
