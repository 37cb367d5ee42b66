"""The nnU-Net-facing trainer classes of nnunet-subfore: the folder ``nnUNet_extTrainer`` points at.

This folder sits at the top of the repository (``trainers/``) because it is what nnU-Net scans: its
modules are imported by nnU-Net as *top-level* modules (the folder is put on ``sys.path``), so they
import each other and the library only by absolute ``nnunet_subfore...`` names and have unique
module names (``subfore_*``). When the package is installed, setuptools maps the folder to
``nnunet_subfore.trainers`` (``package-dir`` in ``pyproject.toml``, for regular and editable
installs), and ``nnunet-subfore trainer-path`` prints where it landed::

    export nnUNet_extTrainer=$(nnunet-subfore trainer-path)

Trainers depend on the library, never the other way round: only ``nnunet_subfore.registry`` looks
trainers up (checked by the import contracts, ``docs/architecture.md``). Keep this file free of
imports: ``trainer-path`` imports it.
"""
