# kgpu-rs — top-level targets.
# SPDX-License-Identifier: GPL-2.0-only
#
#   make run          build, self-test and a short benchmark through the userspace stand-in
#   make test-deps    what the tests need: kernel-test packages (as root, or through sudo -n), bindgen, cargo-fuzz
#   make test         every test: format, lints, workspace tests, loom model, fuzzing, then the kernel in qemu
#                     (the plain test kernel, the soak, then the debug kernel)
#   make test-rust    the userspace part of `make test` only
#   make bench        the full benchmark table (CPU vs the helper's backend, side by side)
#   make helper       build target/release/kgpu-helper
#   make install      (as root, after `make`) the helper, runkgpu/stopkgpu, the systemd unit, the
#                     docs, and kgpu.ko when it was built for the running kernel; runs no cargo
#   Kernel targets (kernel-toolchain, kernel, kmod, test-kernel) are in mk/kernel.mk.

CARGO ?= cargo
HELPER := target/release/kgpu-helper

.PHONY: all helper run bench test test-rust fmt-check clippy cargo-test loom clean install fuzz-smoke test-deps dkms-src

SHELL := /bin/bash

PREFIX ?= /usr/local
DESTDIR ?=

# kgpu.ko too when the running kernel has a Rust-enabled build tree (else a
# note: `make kmod KDIR=...`, dkms, or the qemu test kernel with `make test-kernel`).
all: helper
	@if grep -qs '^CONFIG_RUST=y' $(KDIR)/.config; then $(MAKE) --no-print-directory kmod; \
	else echo "note: kgpu.ko not built: $(KDIR) is not the build tree of a Rust-enabled kernel (make kmod KDIR=..., or see docs/USING.md)"; fi

helper:
	$(CARGO) build --release -p kgpu-helper

run: helper
	$(HELPER) selftest
	$(HELPER) bench --compare --sizes 4K,64K,1M --depths 1,16 --millis 200 --plot bench.svg

bench: helper
	$(HELPER) bench --compare --modes echo,aes128-xts,aes128-ctr,aes128-ecb,aes128-cbc-dec,raid6-gen16 \
		--sizes 4K,64K,1M,16M --depths 1,16,256

# The workspace, and the crates outside it: the in-guest test program and the
# fuzz targets.
fmt-check:
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path kmod/ktest/Cargo.toml -- --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check

# The helper's default `cuda` feature turns on the services' CUDA code too;
# the second run lints the build without it.
clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p kgpu-helper --all-targets --no-default-features -- -D warnings
	$(CARGO) clippy --manifest-path kmod/ktest/Cargo.toml --target-dir target/ktest --all-targets -- -D warnings

cargo-test:
	$(CARGO) test --workspace
	$(HELPER) selftest --backend cpu

loom:
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom $(CARGO) test -p kgpu-common --test loom --release

# Coverage-guided fuzzing of everything that parses what the other side
# wrote (completions, region header, rings, the helper's requests), FUZZ_SECONDS
# per target, from the corpus in fuzz/corpus. Needs cargo-fuzz; libFuzzer's
# flags are unstable, hence RUSTC_BOOTSTRAP on the stable toolchain.
FUZZ_SECONDS ?= 20
FUZZ_TARGETS := completions header ring requests
fuzz-smoke:
	$(CARGO) clippy --manifest-path fuzz/Cargo.toml --target-dir target/fuzz-clippy --all-targets -- -D warnings
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run -O $$t -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 2>&1 \
			| grep -E '^(Done|stat::number_of_executed_units|==[0-9]+==|.*panicked)' ; \
		test $${PIPESTATUS[0]} -eq 0 || exit 1; done

# Everything `make test` needs beyond the Rust toolchain: the kernel-test
# packages and bindgen (kernel-toolchain, root for apt) and cargo-fuzz.
test-deps: kernel-toolchain
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked

test-rust: fmt-check clippy helper cargo-test loom

test: test-rust fuzz-smoke test-kernel test-ivshmem test-soak test-kernel-debug

# Within `make test` the soak loads for 60 s (about five helper kills and two
# fio passes): CI's whole cold run must stay well inside its 90 minutes.
# `make test-soak` alone keeps 120 s.
test: SOAK_SECONDS = 60

# The module's sources alone (no build outputs) in $(DKMS_SRC), for
# `dkms add $(DKMS_SRC)`: Kbuild, kmod/ and the files kmod/ includes by path
# (common/src, each service's kernel/ and its wire encoding, src/proto.rs).
DKMS_VERSION := $(shell sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' dkms.conf)
DKMS_SRC ?= $(DESTDIR)/usr/src/kgpu-$(DKMS_VERSION)
dkms-src:
	rm -rf $(DKMS_SRC)
	install -d $(DKMS_SRC)/kmod/core_state $(DKMS_SRC)/common/src
	install -m 0644 Kbuild dkms.conf LICENSE-GPLv2 $(DKMS_SRC)/
	install -m 0644 kmod/Kbuild kmod/*.rs kmod/*.c kmod/*.h $(DKMS_SRC)/kmod/
	install -m 0644 kmod/core_state/*.rs $(DKMS_SRC)/kmod/core_state/
	install -m 0644 common/src/*.rs $(DKMS_SRC)/common/src/
	for f in services/*/kernel/*.rs services/*/kernel/*.c services/*/kernel/*.h services/*/src/proto.rs; do \
		[ ! -f $$f ] || install -D -m 0644 $$f $(DKMS_SRC)/$$f; done
	rm -f $(DKMS_SRC)/kmod/*.mod.c
	@echo "module sources in $(DKMS_SRC): dkms add $(DKMS_SRC) && dkms install kgpu/$(DKMS_VERSION)"

# Installs what `make` built (it never runs cargo, so nothing is compiled as
# root): the helper, runkgpu/stopkgpu, the systemd unit (written from
# packaging/kgpu-helper.service.in with this PREFIX's paths), the docs, and
# kgpu.ko when it was built against the running kernel ($(KVER)); else the
# module installs with dkms (`make dkms-src`, docs/USING.md).
KVER ?= $(shell uname -r)
SBINDIR := $(PREFIX)/sbin
DOCDIR := $(PREFIX)/share/doc/kgpu-rs
UNITDIR ?= /etc/systemd/system
install:
	@test -x $(HELPER) || { echo "install: $(HELPER) is not built: run 'make' first (as yourself; install runs no cargo)" >&2; exit 1; }
	install -D -m 0755 $(HELPER) $(DESTDIR)$(SBINDIR)/kgpu-helper
	install -D -m 0755 scripts/runkgpu $(DESTDIR)$(SBINDIR)/runkgpu
	install -D -m 0755 scripts/stopkgpu $(DESTDIR)$(SBINDIR)/stopkgpu
	install -d $(DESTDIR)$(UNITDIR)
	sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g' packaging/kgpu-helper.service.in \
		> $(DESTDIR)$(UNITDIR)/kgpu-helper.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/kgpu-helper.service
	install -D -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	install -m 0644 docs/*.md $(DESTDIR)$(DOCDIR)/
	@if [ -f kmod/kgpu.ko ] && [ -f kmod/.kgpu-kdir.cmd ] \
		&& [ "$$(readlink -f "$$(cat kmod/.kgpu-kdir.cmd)")" = "$$(readlink -f /lib/modules/$(KVER)/build)" ]; then \
		echo "install -D -m 0644 kmod/kgpu.ko $(DESTDIR)/lib/modules/$(KVER)/updates/kgpu.ko"; \
		install -D -m 0644 kmod/kgpu.ko $(DESTDIR)/lib/modules/$(KVER)/updates/kgpu.ko; \
		if [ -z "$(DESTDIR)" ]; then depmod -a $(KVER); fi; \
	else echo "note: kgpu.ko not installed (not built for $(KVER)): install it with dkms, see $(DOCDIR)/USING.md"; fi

clean:
	$(CARGO) clean

-include mk/kernel.mk
