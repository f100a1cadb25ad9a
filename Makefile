# kgpu-rs — top-level targets.
# SPDX-License-Identifier: GPL-2.0-only
#
#   make run          build, self-test and a short benchmark through the userspace stand-in
#   make test         every test: format, lints, workspace tests, loom model, then the kernel in qemu
#   make test-rust    the userspace part of `make test` only
#   make bench        the full benchmark table (CPU vs the helper's backend, side by side)
#   make helper       build target/release/kgpu-helper
#   Kernel targets (kernel-toolchain, kernel, kmod, test-kernel) are in mk/kernel.mk.

CARGO ?= cargo
HELPER := target/release/kgpu-helper

.PHONY: all helper run bench test test-rust fmt-check clippy cargo-test loom clean install

PREFIX ?= /usr/local
DESTDIR ?=

all: helper kmod

helper:
	$(CARGO) build --release -p kgpu-helper

run: helper
	$(HELPER) selftest
	$(HELPER) bench --compare --sizes 4K,64K,1M --depths 1,16 --millis 200

bench: helper
	$(HELPER) bench --compare --modes echo,aes128-xts,aes128-ctr,aes128-ecb,aes128-cbc-dec,raid6-gen16 \
		--sizes 4K,64K,1M,16M --depths 1,16,256

fmt-check:
	$(CARGO) fmt --all -- --check

# The helper's default `cuda` feature turns on the services' CUDA code too;
# the second run lints the build without it.
clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p kgpu-helper --all-targets --no-default-features -- -D warnings

cargo-test:
	$(CARGO) test --workspace
	$(HELPER) selftest --backend cpu

loom:
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom $(CARGO) test -p kgpu-common --test loom --release

test-rust: fmt-check clippy helper cargo-test loom

test: test-rust test-kernel

# Installs the helper, runkgpu/stopkgpu, the systemd unit and the docs; the
# module itself installs with dkms (`dkms install .`) or `make kmod` +
# `make -C $$KDIR M=$$PWD modules_install`.
install: helper
	install -D -m 0755 $(HELPER) $(DESTDIR)$(PREFIX)/sbin/kgpu-helper
	install -D -m 0755 scripts/runkgpu $(DESTDIR)$(PREFIX)/sbin/runkgpu
	install -D -m 0755 scripts/stopkgpu $(DESTDIR)$(PREFIX)/sbin/stopkgpu
	install -D -m 0644 packaging/kgpu-helper.service $(DESTDIR)/etc/systemd/system/kgpu-helper.service
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/kgpu-rs/README.md
	install -m 0644 docs/*.md $(DESTDIR)$(PREFIX)/share/doc/kgpu-rs/

clean:
	$(CARGO) clean

-include mk/kernel.mk
