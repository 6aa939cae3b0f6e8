"""x86 <-> ARM parity: bundles run by the aarch64 ncnn build under qemu-user.

``env`` finds the qemu-aarch64 environment that scripts/setup_arm.sh builds,
``protocol`` runs an aarch64 child over files (job.json, inputs.npz ->
outputs.npz, meta.json), ``child`` is that child program (numpy + ncnn +
litedet.runtime only), ``parity`` compares its outputs with x86 and torch.
"""

from .env import ArmEnv, ArmEnvError, default_cache_dir
from .parity import ArmParityThresholds, arm_parity, format_arm_report
from .protocol import ArmRunError, run_bundle_arm

__all__ = ["ArmEnv", "ArmEnvError", "ArmRunError", "default_cache_dir", "run_bundle_arm", "ArmParityThresholds",
           "arm_parity", "format_arm_report"]
