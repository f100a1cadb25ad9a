# Kernel-side targets of kgpu-rs, included by the root Makefile.
# SPDX-License-Identifier: GPL-2.0-only
#
#   make kernel-toolchain  Debian packages (root or sudo -n) and bindgen-cli 0.70 for the test kernel
#   make kernel            build (or reuse) the cached Rust-enabled test kernel
#   make kmod [KDIR=...]   build kmod/kgpu.ko (default KDIR: the running kernel's
#                          /lib/modules/$(uname -r)/build)
#   make kmod-test         build kmod/kgpu.ko against the cached test kernel (built if missing)
#   make kmod-clean
#   make test-kernel       boot the test kernel in qemu and run the in-guest tests
#   make test-soak         the soak: fio with verify on ext4/gaes dm-crypt/md RAID6 (gpq) while
#                          the helper is killed and restarted; SOAK_SECONDS of load (default 120)
#   make test-ivshmem      the ivshmem transport: the guest's region is a file here, served by
#                          kgpu-helper on this side (CPU backend); the quick list of
#                          scripts/qemu/suite-ivshmem.sh (scripts/gpu-e2e runs all of it on a GPU)
#   make kernel-debug      build (or reuse) the debug kernel (clang, KASAN, UBSAN, preemptible)
#   make test-kernel-debug the debug suite (scripts/qemu/suite-debug.sh) on the debug kernel
#
# The cache lives in $(KGPU_CACHE) (default ~/.cache/kgpu-rs), keyed by kernel
# version, config fragment and rustc version.

KGPU_TOP := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))..)
KGPU_KSCRIPTS := $(KGPU_TOP)/scripts/kernel

.PHONY: kernel-toolchain kernel kmod kmod-test kmod-clean test-kernel test-soak test-ivshmem kernel-debug test-kernel-debug test-soak-debug gpu-e2e-pack

kernel-toolchain:
	$(KGPU_KSCRIPTS)/setup-toolchain --apt

kernel:
	$(KGPU_KSCRIPTS)/build-kernel

# The running kernel unless told otherwise; the qemu tests build against their
# own test kernel (scripts/qemu-test).
KDIR ?= /lib/modules/$(shell uname -r)/build
kmod:
	$(KGPU_KSCRIPTS)/build-kmod $(KDIR)

kmod-test:
	$(KGPU_KSCRIPTS)/build-kmod

# Against the tree the objects were built with.
kmod-clean:
	if [ -f kmod/.kgpu-kdir.cmd ]; then $(KGPU_KSCRIPTS)/build-kmod --clean "$$(cat kmod/.kgpu-kdir.cmd)"; fi

test-kernel:
	$(KGPU_TOP)/scripts/qemu-test

SOAK_SECONDS ?= 120
test-soak:
	KGPU_SUITE=soak SOAK_SECONDS=$(SOAK_SECONDS) $(KGPU_TOP)/scripts/qemu-test

test-ivshmem:
	KGPU_SUITE=ivshmem KGPU_GUEST_ARGS="IVSHMEM_QUICK=1 $${KGPU_GUEST_ARGS:-}" $(KGPU_TOP)/scripts/qemu-test

# What scripts/gpu-e2e needs on a GPU machine, in target/gpu-e2e (carry it there).
gpu-e2e-pack:
	$(KGPU_TOP)/scripts/gpu-e2e --pack $(KGPU_TOP)/target/gpu-e2e

kernel-debug:
	KGPU_KERNEL_VARIANT=debug $(KGPU_KSCRIPTS)/build-kernel

test-kernel-debug:
	KGPU_KERNEL_VARIANT=debug KGPU_SUITE=$${KGPU_SUITE:-debug} $(KGPU_TOP)/scripts/qemu-test

# The soak on the debug kernel (not in `make test`: ~20 minutes on 2 cores):
# 1 MiB per fio job and pass, SOAK_SECONDS (default 600) of load.
SOAK_DEBUG_SECONDS ?= 600
test-soak-debug:
	KGPU_KERNEL_VARIANT=debug KGPU_SUITE=soak SOAK_SECONDS=$(SOAK_DEBUG_SECONDS) \
		KGPU_GUEST_ARGS="SOAK_FIO_MB=1 $${KGPU_GUEST_ARGS:-}" $(KGPU_TOP)/scripts/qemu-test
