// SPDX-License-Identifier: GPL-2.0-only
/*
 * gaes: the crypto API glue Linux 6.12's Rust crate has no abstraction for
 * (the GPU AES skciphers' logic is in gaes.rs).
 *
 * This file holds only what needs the C API: the four `skcipher_alg`
 * registrations and their entry points (which forward to Rust), the per-tfm
 * CPU fallback (the kernel's own synchronous implementation of the same
 * algorithm), request accessors and completion, scatterlist tables, the
 * batch window timers, the CPU redo work item, a spinlock, the module
 * parameters and the debugfs counters file.
 */

#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/hrtimer.h>
#include <linux/interrupt.h>
#include <linux/ktime.h>
#include <linux/module.h>
#include <linux/random.h>
#include <linux/scatterlist.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <linux/sysfs.h>
#include <linux/workqueue.h>
#include <crypto/aes.h>
#include <crypto/internal/skcipher.h>

#include "kgpu_shim.h"

/* ---- module parameters ---------------------------------------------------- */

/*
 * gaes_priority: a number, or "auto": each mode registers one above the best
 * driver of that mode present at load (on 6.12: xts-aes-aesni 401,
 * xts-aes-aesni-avx 500, the xts-aes-vaes-* drivers 600-800, the other modes'
 * AES-NI drivers 400), so that every user of ecb/cbc/ctr/xts(aes) by
 * algorithm name (LUKS aes-xts-plain64, eCryptfs) gets gaes.
 */
#define GAES_PRIORITY_AUTO INT_MIN
static int gaes_priority = 200;

static int gaes_priority_set(const char *val, const struct kernel_param *kp)
{
	int ret;

	if (sysfs_streq(val, "auto")) {
		*(int *)kp->arg = GAES_PRIORITY_AUTO;
		return 0;
	}
	ret = param_set_int(val, kp);
	if (!ret && *(int *)kp->arg < 0) {
		*(int *)kp->arg = 200;
		return -EINVAL;
	}
	return ret;
}

static int gaes_priority_get(char *buf, const struct kernel_param *kp)
{
	if (*(int *)kp->arg == GAES_PRIORITY_AUTO)
		return sysfs_emit(buf, "auto\n");
	return param_get_int(buf, kp);
}

static const struct kernel_param_ops gaes_priority_ops = {
	.set = gaes_priority_set,
	.get = gaes_priority_get,
};
module_param_cb(gaes_priority, &gaes_priority_ops, &gaes_priority, 0444);
MODULE_PARM_DESC(gaes_priority,
		 "crypto priority of gaes_ecb/cbc/ctr/xts, or auto: one above the best driver of each mode at load (default 200: below the AES-NI drivers, users opt in by driver name)");

/*
 * The priority of the implementation the crypto API gives a user of @name
 * now (it may instantiate a template for it), or -1 when there is none.
 */
static int gaes_best_priority(const char *name)
{
	struct crypto_skcipher *tfm = crypto_alloc_skcipher(name, 0, 0);
	int prio;

	if (IS_ERR(tfm))
		return -1;
	prio = crypto_skcipher_alg(tfm)->base.cra_priority;
	pr_info("kgpu: gaes: %s is %s (priority %d) before gaes\n", name,
		crypto_tfm_alg_driver_name(crypto_skcipher_tfm(tfm)), prio);
	crypto_free_skcipher(tfm);
	return prio;
}

static unsigned int gaes_window_us = 200;
module_param(gaes_window_us, uint, 0644);
MODULE_PARM_DESC(gaes_window_us, "longest time a batch stays open collecting requests (microseconds)");

static unsigned int gaes_batch_kb = 512;
module_param(gaes_batch_kb, uint, 0644);
MODULE_PARM_DESC(gaes_batch_kb, "a batch is sent when it holds this many KiB");

static unsigned int gaes_batch_reqs = 256;
module_param(gaes_batch_reqs, uint, 0644);
MODULE_PARM_DESC(gaes_batch_reqs, "a batch is sent when it holds this many requests (at most 256)");

static unsigned int gaes_cpu_max_bytes = 2048;
module_param(gaes_cpu_max_bytes, uint, 0644);
MODULE_PARM_DESC(gaes_cpu_max_bytes,
		 "requests shorter than this run on the CPU unless they join a batch (0: every request may go to the helper)");

static unsigned int gaes_max_batches = 16;
module_param(gaes_max_batches, uint, 0644);
MODULE_PARM_DESC(gaes_max_batches,
		 "batches open or in flight at once (at most 16); beyond, requests run on the CPU");

unsigned int kgpu_gaes_shim_param(unsigned int which)
{
	switch (which) {
	case GAES_P_WINDOW_US:
		return READ_ONCE(gaes_window_us);
	case GAES_P_BATCH_KB:
		return READ_ONCE(gaes_batch_kb);
	case GAES_P_BATCH_REQS:
		return READ_ONCE(gaes_batch_reqs);
	case GAES_P_CPU_MAX:
		return READ_ONCE(gaes_cpu_max_bytes);
	case GAES_P_MAX_BATCHES:
		return READ_ONCE(gaes_max_batches);
	}
	return 0;
}

/* ---- contexts -------------------------------------------------------------- */

/* GAES_RS_TFM and GAES_RS_REQ (kgpu_shim.h): room for the Rust parts. */
struct gaes_tfm_ctx {
	u64 rs[GAES_RS_TFM / 8];
	struct crypto_skcipher *fallback;
};

struct gaes_req_ctx {
	u64 rs[GAES_RS_REQ / 8];
	struct skcipher_request fb; /* the fallback's request; its context follows */
};

/* What gaes's Rust side reads of a request (`RawInfo` in ffi.rs). */
struct gaes_req_info {
	struct scatterlist *src;
	struct scatterlist *dst;
	u8 *iv;
	u32 len;
	u32 ivsize;
};

void kgpu_gaes_shim_req_info(struct skcipher_request *req, struct gaes_req_info *info)
{
	info->src = req->src;
	info->dst = req->dst;
	info->iv = req->iv;
	info->len = req->cryptlen;
	info->ivsize = crypto_skcipher_ivsize(crypto_skcipher_reqtfm(req));
}

/*
 * Runs the request on the CPU with the fallback tfm (synchronous: it was
 * allocated with CRYPTO_ALG_ASYNC masked); the fallback updates req->iv the
 * way the kernel's templates do. Any context.
 */
int kgpu_gaes_shim_fallback(struct skcipher_request *req, bool enc)
{
	struct gaes_tfm_ctx *ctx = crypto_skcipher_ctx(crypto_skcipher_reqtfm(req));
	struct gaes_req_ctx *rctx = skcipher_request_ctx(req);
	struct skcipher_request *sub = &rctx->fb;

	skcipher_request_set_tfm(sub, ctx->fallback);
	skcipher_request_set_callback(sub, req->base.flags & CRYPTO_TFM_REQ_MAY_SLEEP, NULL, NULL);
	skcipher_request_set_crypt(sub, req->src, req->dst, req->cryptlen, req->iv);
	return enc ? crypto_skcipher_encrypt(sub) : crypto_skcipher_decrypt(sub);
}

/*
 * Completes a request that was answered -EINPROGRESS. Crypto completions run
 * with bottom halves off (as the crypto engine and the tasklet drivers do).
 */
void kgpu_gaes_shim_complete(struct skcipher_request *req, int err)
{
	if (!in_hardirq() && !irqs_disabled()) {
		local_bh_disable();
		skcipher_request_complete(req, err);
		local_bh_enable();
	} else {
		skcipher_request_complete(req, err);
	}
}

/* ---- scatterlists ------------------------------------------------------------ */

struct scatterlist *kgpu_gaes_shim_sg_alloc(unsigned int n)
{
	struct scatterlist *sg = kcalloc(n, sizeof(*sg), GFP_KERNEL);

	if (sg)
		sg_init_table(sg, n);
	return sg;
}

void kgpu_gaes_shim_sg_free(struct scatterlist *sg)
{
	kfree(sg);
}

/* Clears the table for a new batch (end mark on the last entry). */
void kgpu_gaes_shim_sg_reset(struct scatterlist *tbl, unsigned int cap)
{
	sg_init_table(tbl, cap);
}

/* Entries needed to describe src[0..len), or UINT_MAX if src is shorter. */
unsigned int kgpu_gaes_shim_sg_count(struct scatterlist *src, unsigned int len)
{
	unsigned int n = 0;

	for (; src && len; src = sg_next(src)) {
		if (!src->length)
			continue;
		len -= min(src->length, len);
		n++;
	}
	return len ? UINT_MAX : n;
}

/*
 * Appends the entries describing src[0..len) to tbl[used..cap); returns the new
 * count, or -1 when they do not fit or src is shorter than len.
 */
int kgpu_gaes_shim_sg_append(struct scatterlist *tbl, unsigned int used, unsigned int cap,
			     struct scatterlist *src, unsigned int len)
{
	for (; src && len; src = sg_next(src)) {
		unsigned int n = min(src->length, len);

		if (!n)
			continue;
		if (used >= cap)
			return -1;
		sg_set_page(&tbl[used], sg_page(src), n, src->offset);
		used++;
		len -= n;
	}
	return len ? -1 : (int)used;
}

void kgpu_gaes_shim_sg_mark_end(struct scatterlist *tbl, unsigned int idx)
{
	sg_mark_end(&tbl[idx]);
}

/* ---- lock, time -------------------------------------------------------------- */

static DEFINE_SPINLOCK(gaes_lock);

unsigned long kgpu_gaes_shim_lock(void)
{
	unsigned long flags;

	spin_lock_irqsave(&gaes_lock, flags);
	return flags;
}

void kgpu_gaes_shim_unlock(unsigned long flags)
{
	spin_unlock_irqrestore(&gaes_lock, flags);
}

u64 kgpu_gaes_shim_now_ns(void)
{
	return ktime_get_ns();
}

/* ---- batch window timers and the CPU redo work -------------------------------- */

/* One window timer per batch of the pool (GAES_TIMERS, kgpu_shim.h). */
static struct hrtimer gaes_timers[GAES_TIMERS];

unsigned int kgpu_gaes_shim_timer_count(void)
{
	return GAES_TIMERS;
}

static enum hrtimer_restart gaes_timer_fn(struct hrtimer *t)
{
	kgpu_gaes_rs_timer(t - gaes_timers);
	return HRTIMER_NORESTART;
}

/* (Re)arms the window timer of a batch; it fires in softirq context. */
void kgpu_gaes_shim_timer_arm(unsigned int batch, unsigned int us)
{
	if (batch < GAES_TIMERS)
		hrtimer_start(&gaes_timers[batch], ns_to_ktime((u64)max(us, 1u) * NSEC_PER_USEC),
			      HRTIMER_MODE_REL_SOFT);
}

static struct workqueue_struct *gaes_wq;

static void gaes_work_fn(struct work_struct *w)
{
	kgpu_gaes_rs_work();
}

static DECLARE_WORK(gaes_work, gaes_work_fn);

void kgpu_gaes_shim_queue_work(void)
{
	queue_work(gaes_wq, &gaes_work);
}

/* ---- the algorithms ----------------------------------------------------------- */

static int gaes_setkey(struct crypto_skcipher *tfm, const u8 *key, unsigned int len)
{
	struct gaes_tfm_ctx *ctx = crypto_skcipher_ctx(tfm);
	int err;

	/* The fallback checks the key (length, XTS halves, weak-key flags). */
	crypto_skcipher_clear_flags(ctx->fallback, CRYPTO_TFM_REQ_MASK);
	crypto_skcipher_set_flags(ctx->fallback, crypto_skcipher_get_flags(tfm) & CRYPTO_TFM_REQ_MASK);
	err = crypto_skcipher_setkey(ctx->fallback, key, len);
	if (err)
		return err;
	return kgpu_gaes_rs_setkey(ctx->rs, key, len);
}

static int gaes_crypt(struct skcipher_request *req, unsigned int mode, bool enc)
{
	struct gaes_tfm_ctx *ctx = crypto_skcipher_ctx(crypto_skcipher_reqtfm(req));

	return kgpu_gaes_rs_crypt(req, ctx->rs, mode, enc);
}

#define GAES_ENTRY(m, M)                                                    \
	static int gaes_##m##_enc(struct skcipher_request *req)             \
	{                                                                   \
		return gaes_crypt(req, M, true);                            \
	}                                                                   \
	static int gaes_##m##_dec(struct skcipher_request *req)             \
	{                                                                   \
		return gaes_crypt(req, M, false);                           \
	}
GAES_ENTRY(ecb, GAES_ECB)
GAES_ENTRY(cbc, GAES_CBC)
GAES_ENTRY(ctr, GAES_CTR)
GAES_ENTRY(xts, GAES_XTS)

static int gaes_init_tfm(struct crypto_skcipher *tfm)
{
	struct gaes_tfm_ctx *ctx = crypto_skcipher_ctx(tfm);
	struct crypto_skcipher *fb;

	/* The kernel's own synchronous implementation (never another gaes). */
	fb = crypto_alloc_skcipher(crypto_tfm_alg_name(&tfm->base), 0,
				   CRYPTO_ALG_ASYNC | CRYPTO_ALG_NEED_FALLBACK);
	if (IS_ERR(fb))
		return PTR_ERR(fb);
	memset(ctx->rs, 0, sizeof(ctx->rs));
	ctx->fallback = fb;
	crypto_skcipher_set_reqsize(tfm, sizeof(struct gaes_req_ctx) + crypto_skcipher_reqsize(fb));
	return 0;
}

static void gaes_exit_tfm(struct crypto_skcipher *tfm)
{
	struct gaes_tfm_ctx *ctx = crypto_skcipher_ctx(tfm);

	memzero_explicit(ctx->rs, sizeof(ctx->rs));
	crypto_free_skcipher(ctx->fallback);
}

#define GAES_ALG(m, cname, bs, ivs, minks, maxks, chunk)                          \
	GAES_ALG_NAMED(m, "gaes_" #m, cname, bs, ivs, minks, maxks, chunk)

#define GAES_ALG_NAMED(m, dname, cname, bs, ivs, minks, maxks, chunk)             \
	{                                                                       \
		.base = {                                                       \
			.cra_name = cname,                                      \
			.cra_driver_name = dname,                               \
			.cra_flags = CRYPTO_ALG_ASYNC | CRYPTO_ALG_NEED_FALLBACK, \
			.cra_blocksize = bs,                                    \
			.cra_ctxsize = sizeof(struct gaes_tfm_ctx),             \
			.cra_module = THIS_MODULE,                              \
		},                                                              \
		.min_keysize = minks, .max_keysize = maxks, .ivsize = ivs,      \
		.chunksize = chunk, .setkey = gaes_setkey,                      \
		.encrypt = gaes_##m##_enc, .decrypt = gaes_##m##_dec,           \
		.init = gaes_init_tfm, .exit = gaes_exit_tfm,                   \
	}

static struct skcipher_alg gaes_algs[] = {
	GAES_ALG(ecb, "ecb(aes)", AES_BLOCK_SIZE, 0, AES_MIN_KEY_SIZE, AES_MAX_KEY_SIZE,
		 AES_BLOCK_SIZE),
	GAES_ALG(cbc, "cbc(aes)", AES_BLOCK_SIZE, AES_BLOCK_SIZE, AES_MIN_KEY_SIZE,
		 AES_MAX_KEY_SIZE, AES_BLOCK_SIZE),
	GAES_ALG(ctr, "ctr(aes)", 1, AES_BLOCK_SIZE, AES_MIN_KEY_SIZE, AES_MAX_KEY_SIZE,
		 AES_BLOCK_SIZE),
	GAES_ALG(xts, "xts(aes)", AES_BLOCK_SIZE, AES_BLOCK_SIZE, 2 * AES_MIN_KEY_SIZE,
		 2 * AES_MAX_KEY_SIZE, AES_BLOCK_SIZE),
};

/*
 * Copies of the four drivers (same code, driver names gaes_*_t, priority 0 so
 * no user picks them by algorithm name), registered on demand from debugfs
 * while a helper is attached: the kernel's self-tests (testmgr) run again,
 * now with the helper serving the requests. They stay registered until the
 * module is unloaded.
 */
static struct skcipher_alg gaes_test_algs[] = {
	GAES_ALG_NAMED(ecb, "gaes_ecb_t", "ecb(aes)", AES_BLOCK_SIZE, 0, AES_MIN_KEY_SIZE,
		       AES_MAX_KEY_SIZE, AES_BLOCK_SIZE),
	GAES_ALG_NAMED(cbc, "gaes_cbc_t", "cbc(aes)", AES_BLOCK_SIZE, AES_BLOCK_SIZE,
		       AES_MIN_KEY_SIZE, AES_MAX_KEY_SIZE, AES_BLOCK_SIZE),
	GAES_ALG_NAMED(ctr, "gaes_ctr_t", "ctr(aes)", 1, AES_BLOCK_SIZE, AES_MIN_KEY_SIZE,
		       AES_MAX_KEY_SIZE, AES_BLOCK_SIZE),
	GAES_ALG_NAMED(xts, "gaes_xts_t", "xts(aes)", AES_BLOCK_SIZE, AES_BLOCK_SIZE,
		       2 * AES_MIN_KEY_SIZE, 2 * AES_MAX_KEY_SIZE, AES_BLOCK_SIZE),
};

static DEFINE_MUTEX(gaes_test_mutex);
static bool gaes_test_registered;

/*
 * Waits for the asynchronous self-tests of algs[0..n). The flag is polled
 * first (up to ten minutes, interruptible): a lookup while a test runs waits
 * only 60 s and then kills the test larval, so that the algorithm is never
 * marked tested - which a slow machine (KASAN under emulation, with the extra
 * fuzz tests) reaches. A failed test never sets the flag; the lookup after the
 * bound then reports it.
 */
static void gaes_wait_tests(struct skcipher_alg *algs, int n)
{
	unsigned long until = jiffies + 600 * HZ;
	int i;

	for (i = 0; i < n; i++) {
		struct crypto_skcipher *tfm;

		while (!(READ_ONCE(algs[i].base.cra_flags) & CRYPTO_ALG_TESTED) &&
		       time_before(jiffies, until) && !signal_pending(current))
			msleep(20);
		tfm = crypto_alloc_skcipher(algs[i].base.cra_driver_name, 0, 0);

		if (IS_ERR(tfm))
			pr_warn("kgpu: %s unusable after its self-test (%ld)\n",
				algs[i].base.cra_driver_name, PTR_ERR(tfm));
		else
			crypto_free_skcipher(tfm);
	}
}

/* Registers the copies once; 0 when every copy passed its self-tests. */
static int gaes_selftest_copies(void)
{
	int i, ret = 0;

	mutex_lock(&gaes_test_mutex);
	if (gaes_test_registered) {
		ret = -EALREADY;
		goto out;
	}
	for (i = 0; i < ARRAY_SIZE(gaes_test_algs); i++)
		gaes_test_algs[i].base.cra_priority = 0;
	ret = crypto_register_skciphers(gaes_test_algs, ARRAY_SIZE(gaes_test_algs));
	if (ret)
		goto out;
	gaes_test_registered = true;
	gaes_wait_tests(gaes_test_algs, ARRAY_SIZE(gaes_test_algs));
	for (i = 0; i < ARRAY_SIZE(gaes_test_algs); i++)
		if (!(gaes_test_algs[i].base.cra_flags & CRYPTO_ALG_TESTED))
			ret = -EBADMSG;
out:
	mutex_unlock(&gaes_test_mutex);
	return ret;
}

/* ---- the kernel's own AES, timed at load ----------------------------------------- */

static const char *const gaes_mode_names[] = { "ecb(aes)", "cbc(aes)", "ctr(aes)", "xts(aes)" };
static char gaes_cpu_driver[4][2][CRYPTO_MAX_ALG_NAME];

#define GAES_TIME_BUF (64 * 1024)

/*
 * Times the kernel's implementation of @mode on this core: AES-128, 4 KiB
 * requests (dm-crypt's sector) in place over a 64 KiB buffer, for about 4 ms.
 * @best: the driver a user of the algorithm gets now (the highest priority,
 * perhaps asynchronous: waited for), else the synchronous one gaes's CPU path
 * uses. Returns MB/s (0: none or it failed) and records the driver's name.
 * Process context, before gaes registers (so neither is gaes).
 */
u64 kgpu_gaes_shim_time_cpu(unsigned int mode, bool best)
{
	struct crypto_skcipher *tfm;
	struct skcipher_request *req = NULL;
	struct scatterlist sg;
	DECLARE_CRYPTO_WAIT(wait);
	u8 key[32], iv[AES_BLOCK_SIZE];
	u8 *buf = NULL;
	u64 t0, ns = 0, bytes = 0, mbps = 0;
	int err = -ENOMEM;

	if (mode >= ARRAY_SIZE(gaes_mode_names))
		return 0;
	gaes_cpu_driver[mode][best][0] = 0;
	tfm = crypto_alloc_skcipher(gaes_mode_names[mode], 0,
				    best ? 0 : CRYPTO_ALG_ASYNC | CRYPTO_ALG_NEED_FALLBACK);
	if (IS_ERR(tfm))
		return 0;
	strscpy(gaes_cpu_driver[mode][best], crypto_tfm_alg_driver_name(crypto_skcipher_tfm(tfm)),
		CRYPTO_MAX_ALG_NAME);
	get_random_bytes(key, sizeof(key));
	buf = kmalloc(GAES_TIME_BUF, GFP_KERNEL);
	req = skcipher_request_alloc(tfm, GFP_KERNEL);
	if (!buf || !req)
		goto out;
	err = crypto_skcipher_setkey(tfm, key, mode == GAES_XTS ? 32 : 16);
	if (err)
		goto out;
	memset(buf, 0x3c, GAES_TIME_BUF);
	skcipher_request_set_callback(req, CRYPTO_TFM_REQ_MAY_SLEEP | CRYPTO_TFM_REQ_MAY_BACKLOG,
				      crypto_req_done, &wait);
	t0 = ktime_get_ns();
	do {
		sg_init_one(&sg, buf + bytes % GAES_TIME_BUF, 4096);
		memset(iv, 0, sizeof(iv));
		iv[0] = bytes >> 12;
		skcipher_request_set_crypt(req, &sg, &sg, 4096, iv);
		err = crypto_wait_req(crypto_skcipher_encrypt(req), &wait);
		if (err)
			break;
		bytes += 4096;
		ns = ktime_get_ns() - t0;
	} while (ns < 4 * NSEC_PER_MSEC || bytes < 16 * 4096);
	if (!err && ns)
		mbps = bytes * 1000 / ns;
out:
	if (err)
		pr_info("kgpu: gaes: timing %s failed (%d)\n", gaes_cpu_driver[mode][best], err);
	skcipher_request_free(req);
	kfree(buf);
	crypto_free_skcipher(tfm);
	memzero_explicit(key, sizeof(key));
	return mbps;
}

/* The driver kgpu_gaes_shim_time_cpu(@mode, @best) timed ("" if none). */
const char *kgpu_gaes_shim_cpu_driver(unsigned int mode, bool best)
{
	return mode < ARRAY_SIZE(gaes_mode_names) ? gaes_cpu_driver[mode][best] : "";
}

/* ---- debugfs: /sys/kernel/debug/kgpu/gaes --------------------------------------- */

static ssize_t gaes_stats_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	return kgpu_shim_read_text(ubuf, count, ppos, kgpu_gaes_rs_stats);
}

/*
 * Writing "reset" zeroes the counters (for measurements); "selftest" registers
 * the test copies (see above) and fails with EBADMSG if one did not pass.
 */
static ssize_t gaes_stats_write(struct file *file, const char __user *ubuf, size_t count,
				loff_t *ppos)
{
	char cmd[16] = {};

	if (count >= sizeof(cmd))
		return -EINVAL;
	if (copy_from_user(cmd, ubuf, count))
		return -EFAULT;
	if (!strncmp(cmd, "reset", 5)) {
		kgpu_gaes_rs_reset_stats();
		return count;
	}
	if (!strncmp(cmd, "selftest", 8)) {
		int ret = gaes_selftest_copies();

		return ret ? ret : count;
	}
	return -EINVAL;
}

static const struct file_operations gaes_stats_fops = {
	.owner = THIS_MODULE,
	.read = gaes_stats_read,
	.write = gaes_stats_write,
	.llseek = default_llseek,
};

static struct dentry *gaes_debugfs;

/* ---- registration ----------------------------------------------------------------- */

int kgpu_gaes_shim_register(void)
{
	struct dentry *dir;
	int i, ret;

	if (kgpu_gaes_rs_tfm_ctx_size() > GAES_RS_TFM || kgpu_gaes_rs_req_ctx_size() > GAES_RS_REQ) {
		pr_err("kgpu: gaes: context layout mismatch\n");
		return -EINVAL;
	}
	for (i = 0; i < GAES_TIMERS; i++) {
		hrtimer_init(&gaes_timers[i], CLOCK_MONOTONIC, HRTIMER_MODE_REL_SOFT);
		gaes_timers[i].function = gaes_timer_fn;
	}
	/* dm-crypt writes back through these: the redo work must make progress. */
	gaes_wq = alloc_workqueue("kgpu_gaes", WQ_MEM_RECLAIM | WQ_HIGHPRI, 0);
	if (!gaes_wq)
		return -ENOMEM;
	for (i = 0; i < ARRAY_SIZE(gaes_algs); i++) {
		int prio = gaes_priority;

		if (prio == GAES_PRIORITY_AUTO)
			prio = max(gaes_best_priority(gaes_algs[i].base.cra_name) + 1, 200);
		gaes_algs[i].base.cra_priority = prio;
	}
	ret = crypto_register_skciphers(gaes_algs, ARRAY_SIZE(gaes_algs));
	if (ret) {
		destroy_workqueue(gaes_wq);
		return ret;
	}
	/*
	 * The self-tests run asynchronously (and hold module references): wait
	 * for them, so the module is usable and unloadable once loaded.
	 */
	gaes_wait_tests(gaes_algs, ARRAY_SIZE(gaes_algs));
	dir = debugfs_lookup("kgpu", NULL);
	if (dir) {
		gaes_debugfs = debugfs_create_file("gaes", 0600, dir, NULL, &gaes_stats_fops);
		dput(dir);
	}
	return 0;
}

/*
 * No tfm exists here (each holds a module reference), so no request is
 * pending; the timers may still be armed for batches no longer open.
 */
void kgpu_gaes_shim_unregister(void)
{
	int i;

	debugfs_remove(gaes_debugfs);
	gaes_debugfs = NULL;
	crypto_unregister_skciphers(gaes_algs, ARRAY_SIZE(gaes_algs));
	if (gaes_test_registered)
		crypto_unregister_skciphers(gaes_test_algs, ARRAY_SIZE(gaes_test_algs));
	gaes_test_registered = false;
	for (i = 0; i < GAES_TIMERS; i++)
		hrtimer_cancel(&gaes_timers[i]);
	flush_workqueue(gaes_wq);
	destroy_workqueue(gaes_wq);
}

/* The Rust part of a request's context. */
void *kgpu_gaes_shim_req_ctx(struct skcipher_request *req)
{
	struct gaes_req_ctx *rctx = skcipher_request_ctx(req);

	return rctx->rs;
}
