"""ARM measurements under qemu-aarch64: the TCG instruction-count plugin and its driver."""
