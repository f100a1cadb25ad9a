# Shared settings for the kernel scripts; sourced, not executed.
# SPDX-License-Identifier: GPL-2.0-only

KGPU_CACHE=${KGPU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kgpu-rs}
KGPU_TOOLS=${KGPU_TOOLS:-$KGPU_CACHE/tools}
KGPU_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KGPU_ROOT=$(cd "$KGPU_SCRIPTS/../.." && pwd)

# The kernel and the module are built with Debian's rustc (it ships the
# library sources the kernel needs); the workspace keeps its rustup toolchain.
KERNEL_RUSTC=${KERNEL_RUSTC:-/usr/bin/rustc}
KERNEL_SRC_TARBALL=${KERNEL_SRC_TARBALL:-/usr/src/linux-source-6.12.tar.xz}
BINDGEN=${BINDGEN:-$KGPU_TOOLS/bin/bindgen}
KERNEL_FRAGMENT=$KGPU_SCRIPTS/kgpu.config

# KGPU_KERNEL_VARIANT picks the test kernel: "" (default: gcc, the fragment
# above) or "debug" (clang with LLVM=1, plus kgpu-debug.config: KASAN, UBSAN,
# a preemptible kernel, the crypto manager's fuzz tests). Each has its own
# cache entry.
KGPU_KERNEL_VARIANT=${KGPU_KERNEL_VARIANT:-}
case $KGPU_KERNEL_VARIANT in
    "") KERNEL_FRAGMENTS=("$KERNEL_FRAGMENT") ;;
    debug) KERNEL_FRAGMENTS=("$KERNEL_FRAGMENT" "$KGPU_SCRIPTS/kgpu-debug.config") ;;
    *) echo "error: KGPU_KERNEL_VARIANT=$KGPU_KERNEL_VARIANT: use '' or 'debug'" >&2; exit 2 ;;
esac

die() { echo "error: $*" >&2; exit 1; }
log() { echo "[$(date +%T)] $*" >&2; }

kernel_rust_lib_src() {
    local v
    v=$("$KERNEL_RUSTC" --version | awk '{print $2}')
    echo "/usr/src/rustc-$v/library"
}

# Kernel version of the source tarball, e.g. 6.12.117 (read from the tar's Makefile).
kernel_src_version() {
    tar xJOf "$KERNEL_SRC_TARBALL" --wildcards '*/Makefile' 2>/dev/null \
        | awk -F' *= *' '/^VERSION/{v=$2} /^PATCHLEVEL/{p=$2} /^SUBLEVEL/{s=$2} /^EXTRAVERSION/{print v"."p"."s$2; exit}'
}

# The cache key: kernel version, fragment hash, rustc version (and, for the
# debug variant, the clang version).
kernel_key() {
    local kv fh rv
    kv=$(cat "$KGPU_CACHE/.srcver-$(stat -c %s-%Y "$KERNEL_SRC_TARBALL")" 2>/dev/null) || {
        kv=$(kernel_src_version)
        [ -n "$kv" ] || die "cannot read the kernel version from $KERNEL_SRC_TARBALL"
        mkdir -p "$KGPU_CACHE"
        echo "$kv" > "$KGPU_CACHE/.srcver-$(stat -c %s-%Y "$KERNEL_SRC_TARBALL")"
    }
    fh=$(cat "${KERNEL_FRAGMENTS[@]}" | sha256sum | cut -c1-12)
    rv=$("$KERNEL_RUSTC" --version | awk '{print $2}')
    if [ "$KGPU_KERNEL_VARIANT" = debug ]; then
        local cv
        cv=$(clang --version 2>/dev/null | sed -nE 's/.*clang version ([0-9.]+).*/\1/p' | head -n1)
        echo "linux-$kv-debug-cfg$fh-rustc$rv-clang${cv:-none}"
    else
        echo "linux-$kv-cfg$fh-rustc$rv"
    fi
}

kernel_make_args() {
    local llvm=
    [ "$KGPU_KERNEL_VARIANT" = debug ] && llvm=" LLVM=1"
    echo "ARCH=x86_64 RUSTC=$KERNEL_RUSTC BINDGEN=$BINDGEN RUST_LIB_SRC=$(kernel_rust_lib_src)$llvm"
}
