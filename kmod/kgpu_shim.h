/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * kgpu_shim.h: every function and constant the C files of kgpu.ko share with
 * each other or with the Rust side.
 *
 * The functions implemented in Rust and called from C come first, then the
 * functions of each C file, most of them called only from Rust (each
 * non-static function needs a prototype). The Rust side declares the same
 * functions in its `extern "C"` blocks, each behind safe wrappers: shim.c's
 * in the `shim` module of kgpu_main.rs and in kmod/ffi.rs, each service's in
 * its kernel/ffi.rs; a constant that must match a Rust one names it, and the
 * Rust one names this file.
 */

#ifndef KGPU_SHIM_H
#define KGPU_SHIM_H

#include <linux/types.h>

struct page;
struct scatterlist;
struct skcipher_request;

/* ==== Implemented in Rust ================================================== */

/* kgpu_main.rs: the device, the transport and the debugfs files. */
int kgpu_rs_open(void);
void kgpu_rs_release(void);
unsigned int kgpu_rs_poll_mask(void);
long kgpu_rs_ioctl(unsigned int cmd, unsigned long arg);
void kgpu_rs_poll_work(void);
size_t kgpu_rs_stats(char *buf, size_t len);
long kgpu_rs_command(unsigned int slot, const char *cmd, size_t cmd_len, char *out, size_t out_len);
int kgpu_rs_ivshmem_bind(void *base, u64 len);
void kgpu_rs_ivshmem_unbind(void);
unsigned int kgpu_rs_ivshmem_tick(void);

/* Values of kgpu_rs_poll_mask(): POLL_IN and POLL_HUP in core_state. */
#define KGPU_POLL_IN 1u
#define KGPU_POLL_HUP 2u

/* gaes (services/aes/kernel/ffi.rs): the AES skciphers. */
int kgpu_gaes_rs_setkey(void *tctx, const u8 *key, unsigned int len);
int kgpu_gaes_rs_crypt(struct skcipher_request *req, const void *tctx, unsigned int mode, bool enc);
void kgpu_gaes_rs_timer(unsigned int batch);
void kgpu_gaes_rs_work(void);
size_t kgpu_gaes_rs_stats(char *buf, size_t len);
void kgpu_gaes_rs_reset_stats(void);
size_t kgpu_gaes_rs_tfm_ctx_size(void);
size_t kgpu_gaes_rs_req_ctx_size(void);

/* gpq (services/raid6/kernel/ffi.rs): the RAID6 algorithm. */
void kgpu_gpq_rs_gen(int disks, size_t bytes, void **ptrs);
void kgpu_gpq_rs_xor(int disks, int start, int stop, size_t bytes, void **ptrs);
size_t kgpu_gpq_rs_show(char *buf, size_t len);
long kgpu_gpq_rs_command(const char *cmd, size_t len);

/* ==== shim.c =============================================================== */

/* Called from the Rust side. */
int kgpu_shim_init(void);
void kgpu_shim_exit(void);
unsigned int kgpu_shim_sync_timeout_ms(void);
unsigned int kgpu_shim_request_timeout_ms(void);
unsigned int kgpu_shim_max_region_mb(void);
unsigned int kgpu_shim_max_request_kb(void);
unsigned int kgpu_shim_spin_timeout_us(void);
unsigned int kgpu_shim_heartbeat_timeout_ms(void);
void kgpu_shim_cpu_relax(void);
void kgpu_shim_preempt_disable(void);
void kgpu_shim_preempt_enable(void);
unsigned int kgpu_shim_transport_mode(void);
unsigned int kgpu_shim_ivshmem_poll_us(void);
unsigned int kgpu_shim_policy(unsigned int which);
u64 kgpu_shim_time_copy_mbps(void);
unsigned long kgpu_shim_lock(void);
void kgpu_shim_unlock(unsigned long flags);
void kgpu_shim_wake_helper(void);
void kgpu_shim_wake_waiters(void);
int kgpu_shim_wait_word(const u32 *word, unsigned int timeout_ms);
int kgpu_shim_wait_zero(const u32 *counter, unsigned int timeout_ms);
void kgpu_shim_msleep(unsigned int ms);
bool kgpu_shim_may_sleep(void);
void kgpu_shim_kick_poll(void);
void kgpu_shim_cancel_poll(void);
int kgpu_shim_pin_map(unsigned long uaddr, unsigned long npages,
		      struct page ***pages_out, void **vaddr_out);
void kgpu_shim_unpin_unmap(struct page **pages, unsigned long npages, void *vaddr);
int kgpu_shim_copy_from_user(void *dst, unsigned long src, unsigned long len);
void *kgpu_shim_cipher_new(const char *alg);
void kgpu_shim_cipher_free(void *tfm);
int kgpu_shim_cipher_run(void *tfm, const u8 *key, unsigned int keylen, const u8 *iv,
			 const u8 *src, u8 *dst, unsigned int len, bool encrypt);
const char *kgpu_shim_raid6_name(void);
size_t kgpu_shim_sg_to_buf(struct scatterlist *sgl, size_t skip, void *buf, size_t len);
size_t kgpu_shim_sg_from_buf(struct scatterlist *sgl, size_t skip, const void *buf, size_t len);
struct scatterlist *kgpu_shim_sg_alloc(unsigned int n);
void kgpu_shim_sg_free(struct scatterlist *sgl);
unsigned int kgpu_shim_sg_fill(struct scatterlist *sgl, unsigned int n, void *buf, size_t len,
			       size_t piece);
int kgpu_shim_run_parallel(unsigned int n, void (*fn)(void *ctx, unsigned int idx), void *ctx);
int kgpu_shim_raid6_gen(int disks, size_t unit, const u8 *data, u8 *pq);

/* For the debugfs files of all three C files: reads the text @fill renders. */
ssize_t kgpu_shim_read_text(char __user *ubuf, size_t count, loff_t *ppos,
			    size_t (*fill)(char *buf, size_t len));

/*
 * Command files in debugfs kgpu/: slot 0 is the self-test, slot 1 + i the file
 * of service i of the service table (service.rs checks it has at most
 * KGPU_CMD_FILES - 1 services).
 */
#define KGPU_CMD_FILES 8
int kgpu_shim_command_file(unsigned int slot, const char *name);
void kgpu_shim_command_file_remove(unsigned int slot);

/* ==== shim_crypto.c ======================================================== */

/* Called from gaes (services/aes/kernel/ffi.rs). */
struct gaes_req_info;
int kgpu_gaes_shim_register(void);
void kgpu_gaes_shim_unregister(void);
unsigned int kgpu_gaes_shim_param(unsigned int which);
void kgpu_gaes_shim_req_info(struct skcipher_request *req, struct gaes_req_info *info);
void *kgpu_gaes_shim_req_ctx(struct skcipher_request *req);
int kgpu_gaes_shim_fallback(struct skcipher_request *req, bool enc);
void kgpu_gaes_shim_complete(struct skcipher_request *req, int err);
struct scatterlist *kgpu_gaes_shim_sg_alloc(unsigned int n);
void kgpu_gaes_shim_sg_free(struct scatterlist *sg);
void kgpu_gaes_shim_sg_reset(struct scatterlist *tbl, unsigned int cap);
unsigned int kgpu_gaes_shim_sg_count(struct scatterlist *src, unsigned int len);
int kgpu_gaes_shim_sg_append(struct scatterlist *tbl, unsigned int used, unsigned int cap,
			     struct scatterlist *src, unsigned int len);
void kgpu_gaes_shim_sg_mark_end(struct scatterlist *tbl, unsigned int idx);
unsigned long kgpu_gaes_shim_lock(void);
void kgpu_gaes_shim_unlock(unsigned long flags);
u64 kgpu_gaes_shim_now_ns(void);
void kgpu_gaes_shim_timer_arm(unsigned int batch, unsigned int us);
unsigned int kgpu_gaes_shim_timer_count(void);
void kgpu_gaes_shim_queue_work(void);
u64 kgpu_gaes_shim_time_cpu(unsigned int mode, bool best);
const char *kgpu_gaes_shim_cpu_driver(unsigned int mode, bool best);

/* Indices of kgpu_gaes_shim_param(): P_WINDOW_US..P_MAX_BATCHES in services/aes/kernel/ffi.rs. */
enum { GAES_P_WINDOW_US, GAES_P_BATCH_KB, GAES_P_BATCH_REQS, GAES_P_CPU_MAX, GAES_P_MAX_BATCHES };

/*
 * The modes, as kgpu_gaes_rs_crypt() and kgpu_gaes_shim_time_cpu() take them:
 * ECB..XTS in gaes.rs.
 */
enum { GAES_ECB, GAES_CBC, GAES_CTR, GAES_XTS };

/*
 * Room reserved in each tfm and request context for the Rust parts
 * (kgpu_gaes_rs_tfm_ctx_size() and kgpu_gaes_rs_req_ctx_size(), checked at
 * registration).
 */
#define GAES_RS_TFM 128
#define GAES_RS_REQ 32

/*
 * One window timer per batch of the pool: POOL in gaes.rs, which checks
 * kgpu_gaes_shim_timer_count() against it at init.
 */
#define GAES_TIMERS 16

/* ==== shim_raid6.c ========================================================= */

/* Called from gpq (services/raid6/kernel/ffi.rs; kgpu_gpq_shim_cpu_gen from shim.c too). */
int kgpu_gpq_shim_init(size_t max_unit, unsigned int max_sg);
void kgpu_gpq_shim_exit(void);
bool kgpu_gpq_shim_param_enable(void);
long kgpu_gpq_shim_param_threshold(void);
unsigned int kgpu_gpq_shim_param_spin_us(void);
bool kgpu_gpq_shim_param_verify(void);
unsigned int kgpu_gpq_shim_param_wake_us(void);
int kgpu_gpq_shim_install(void);
void kgpu_gpq_shim_restore(void);
bool kgpu_gpq_shim_has_xor(void);
const char *kgpu_gpq_shim_saved_name(void);
const char *kgpu_gpq_shim_current_name(void);
/* The saved CPU algorithm (raid6_call when gpq is not installed). */
void kgpu_gpq_shim_cpu_gen(int disks, size_t bytes, void **ptrs);
void kgpu_gpq_shim_cpu_xor(int disks, int start, int stop, size_t bytes, void **ptrs);
bool kgpu_gpq_shim_may_spin(void);
unsigned int kgpu_gpq_shim_max_spinners(void);
bool kgpu_gpq_shim_pcpu_begin(struct scatterlist **sg, u8 **bounce);
void kgpu_gpq_shim_pcpu_end(void);
unsigned int kgpu_gpq_shim_sg_build(struct scatterlist *sg, void **ptrs, int start, int stop,
				    unsigned int lead_zero, unsigned int trail_zero, size_t bytes);
void kgpu_gpq_shim_sync(void);
void **kgpu_gpq_shim_bench_alloc(int disks, size_t bytes);
void kgpu_gpq_shim_bench_free(void **ptrs, int disks);
void kgpu_gpq_shim_preempt_disable(void);
void kgpu_gpq_shim_preempt_enable(void);
void kgpu_gpq_shim_cond_resched(void);

/*
 * Largest bytes per disk of the helper path and scatterlist entries per call:
 * MAX_UNIT and MAX_SG in gpq.rs, which passes its values to
 * kgpu_gpq_shim_init() to be checked against these.
 */
#define GPQ_MAX_UNIT (64 * 1024)
#define GPQ_MAX_SG 256

#endif /* KGPU_SHIM_H */
