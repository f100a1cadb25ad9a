# The gaes suite (kgpu_suite=gaes, KGPU_SUITE=gaes): the module loaded, every
# gaes test (the crypto manager's self-tests, AF_ALG against the generic
# drivers, dm-crypt cross-reads, the helper killed, eCryptfs), the unload and
# the final checks. A quick run for work on gaes; GAES_ONLY (a glob, e.g.
# KGPU_GUEST_ARGS=GAES_ONLY=gaes_dmcrypt_*) narrows the gaes tests.
# SPDX-License-Identifier: GPL-2.0-only

ONLY="module_* ${GAES_ONLY:-gaes_*} no_kmemleak_* dmesg_clean"
. /guest-tests.sh
