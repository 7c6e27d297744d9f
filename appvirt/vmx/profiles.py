"""Built-in VMCS profiles, used when no `--vmcs` is given.

`kvm_default()` is `policies/vmcs/kvm-default.yaml` (a test keeps them equal), embedded so that
an installed appvirt has a default without the repository's policy directory.
"""

from __future__ import annotations

from functools import lru_cache

from .vmcs import Vmcs
from .vmcs_file import vmcs_from_text

KVM_DEFAULT_YAML = """\
name: kvm-default
description: KVM-like defaults (EPT, VPID, APICv, unconditional I/O exiting, MSR bitmap)
pin_based: [external_interrupt_exiting, nmi_exiting, virtual_nmis, process_posted_interrupts]
primary:
  - hlt_exiting
  - mwait_exiting
  - rdpmc_exiting
  - use_tsc_offsetting
  - use_tpr_shadow
  - mov_dr_exiting              # cleared lazily by handle_dr on the first DR access
  - unconditional_io_exiting
  - use_msr_bitmaps
  - monitor_exiting
  - activate_secondary_controls
secondary:
  - enable_ept
  - enable_rdtscp
  - virtualize_x2apic_mode
  - enable_vpid
  - wbinvd_exiting
  - unrestricted_guest
  - apic_register_virtualization
  - virtual_interrupt_delivery
  - pause_loop_exiting
  - enable_invpcid
  - enable_xsaves_xrstors
vm_exit: [host_address_space_size, ack_interrupt_on_exit, save_pat, load_pat, load_efer]
vm_entry: [ia32e_mode_guest, load_pat, load_efer]
exception_bitmap: [DB, UD, AC, MC]     # #PF is not intercepted with EPT
page_fault: {mask: 0, match: 0}
msr_bitmap:
  default: exit
  read:
    pass: [IA32_TSC, IA32_FS_BASE, IA32_GS_BASE, IA32_KERNEL_GS_BASE, IA32_SYSENTER_CS,
           IA32_SYSENTER_ESP, IA32_SYSENTER_EIP, X2APIC_TPR]
  write:
    pass: [IA32_FS_BASE, IA32_GS_BASE, IA32_KERNEL_GS_BASE, IA32_SYSENTER_CS,
           IA32_SYSENTER_ESP, IA32_SYSENTER_EIP, X2APIC_TPR, X2APIC_EOI, 0x83f]
cr0: {mask: 0xfffffffffffefff7, shadow: 0x80050033}   # the guest owns TS and WP
cr4: {mask: 0xfffffffffffef861, shadow: 0x506a0}      # guest-owned: PVI DE TSD PGE PCE OSFXSR OSXMMEXCPT FSGSBASE
cr3_targets: {count: 0}
tsc: {offset: -1000000, multiplier: 0x1000000000000}
pause_loop: {gap: 128, window: 4096}
vpid: 1
eoi_exit_vectors: [0x41]
ept:
  memory_type: wb
  accessed_dirty: true
  map_on_demand: true
  memslots:
    - {guest_physical: 0x0, size: 3G, host_physical: 0x100000000}
  map:                                 # RAM the guest kernel has already touched
    - {guest_physical: 0x0, size: 1G}
  mmio:                                # KVM marks MMIO with misconfigured entries
    - {guest_physical: 0xfebf0000, size: 16K, name: virtio-blk notify, fast: true}
    - {guest_physical: 0xfebf4000, size: 16K, name: virtio-net notify, fast: true}
    - {guest_physical: 0xfebd0000, size: 4K, name: virtio-net config}
hypervisor_signature: KVMKVMKVM
"""


@lru_cache(maxsize=1)
def kvm_default() -> Vmcs:
    """The KVM-like default VMCS (EPT, VPID, APICv, unconditional I/O exiting)."""
    return vmcs_from_text(KVM_DEFAULT_YAML, file="<built-in kvm-default>")
