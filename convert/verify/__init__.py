"""Verification, apart from bundle writing: the three parities and their one core.

``compare`` (tensor stats, detection matching, top-k agreement, limits) and
``report`` (records, tables, charts) are shared; ``checks`` says per result
type how two results compare; ``torch_parity`` (torch <-> ncnn), ``cpp_core``
(Python <-> the C++ core through ctypes) and ``arm/`` (x86 <-> qemu-aarch64)
use them.
"""
