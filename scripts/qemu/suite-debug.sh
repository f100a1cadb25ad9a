# The suite of the debug kernel (KASAN, UBSAN, lockdep, a preemptible
# kernel; `make test-kernel-debug`): under TCG that kernel runs ~10x slower,
# so it runs every protocol, hostile-helper and fallback test of the module
# and one representative of each data path (gaes through dm-crypt, gpq under
# md), and leaves the long cross-checks to the plain kernel's full suite, as
# it does the runkgpu/stopkgpu scripts, gpq's parameter round trip, rmmod
# refused under a mapping and the two-key batching (shell, parameter and
# batching logic that KASAN has nothing to say about).
# Any kernel splat on the console fails the run (scripts/qemu-test).
# SPDX-License-Identifier: GPL-2.0-only

ONLY="module_* dev_node_* non_root_refused rmmod_refused_while_attached second_opener_refused attach_* no_helper_* standin_* parallel_* error_* selftest_*
hostile_* *_ignored timeouts_* nosleep_* heartbeat_* corrupt_* drain_* helper_* bad_* *_door*
gaes_proc_crypto_selftest_passed gaes_testmgr_with_helper gaes_dmcrypt_xts_cross_read
gaes_dmcrypt_helper_killed
gaes_registered gpq_installed gpq_md_raid6_write_check gpq_md_rmw_xor_syndrome
gpq_md_helper_killed_in_resync gpq_md_teardown reload_* no_kmemleak_* dmesg_clean"
. /guest-tests.sh
