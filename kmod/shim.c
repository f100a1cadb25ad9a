// SPDX-License-Identifier: GPL-2.0-only
/*
 * kgpu: the registrations Linux 6.12's Rust crate has no abstraction for.
 *
 * The misc device (/dev/kgpu) and its file operations, page pinning and
 * vmap, the ivshmem PCI driver (BAR2 mapped write-back) and its polling
 * thread, the spinlock, wait queues and delayed work, debugfs files and the
 * module parameters. Every decision is made on the Rust side
 * (kgpu_main.rs); the functions here forward to it or wrap one kernel
 * primitive each.
 */

#include <crypto/skcipher.h>
#include <linux/capability.h>
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/fs.h>
#include <linux/io.h>
#include <linux/kthread.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/poll.h>
#include <linux/raid/pq.h>
#include <linux/scatterlist.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include "kgpu_shim.h"

/* ---- module parameters ------------------------------------------------ */

static unsigned int sync_timeout_ms = 5000;
module_param(sync_timeout_ms, uint, 0644);
MODULE_PARM_DESC(sync_timeout_ms,
		 "How long a synchronous request waits for the helper before failing with a timeout (ms, default 5000)");

static unsigned int request_timeout_ms = 10000;
module_param(request_timeout_ms, uint, 0644);
MODULE_PARM_DESC(request_timeout_ms,
		 "Asynchronous requests still in flight after this long are failed with a timeout (ms, default 10000, 0 = never)");

static unsigned int cq_poll_ms = 2;
module_param(cq_poll_ms, uint, 0644);
MODULE_PARM_DESC(cq_poll_ms,
		 "Period of the kernel-side completion poll while requests are in flight (ms, default 2, at least one jiffy)");

static unsigned int heartbeat_timeout_ms = 2000;
module_param(heartbeat_timeout_ms, uint, 0644);
MODULE_PARM_DESC(heartbeat_timeout_ms,
		 "A helper whose heartbeat stops this long while requests are in flight is treated as stalled: its requests fail, new ones go to the CPU until it beats again (ms, default 2000, 0 = off)");

static unsigned int spin_timeout_us = 2000;
module_param(spin_timeout_us, uint, 0644);
MODULE_PARM_DESC(spin_timeout_us,
		 "How long a caller that cannot sleep spins for its answer before failing with a timeout (us, default 2000)");

static unsigned int max_region_mb = 4096;
module_param(max_region_mb, uint, 0444);
MODULE_PARM_DESC(max_region_mb, "Largest region a helper may attach (MiB, default 4096)");

static unsigned int max_request_kb = 16384;
module_param(max_request_kb, uint, 0644);
MODULE_PARM_DESC(max_request_kb,
		 "Largest single request (input or output) accepted by the submission API (KiB, default 16384)");

static char *transport = "auto";
module_param(transport, charp, 0444);
MODULE_PARM_DESC(transport,
		 "Where the region comes from: auto (the first helper to offer one), device (/dev/kgpu only), ivshmem (an ivshmem PCI device's memory, served by a helper outside this VM)");

static unsigned int ivshmem_poll_us = 50;
module_param(ivshmem_poll_us, uint, 0644);
MODULE_PARM_DESC(ivshmem_poll_us,
		 "Period of the completion poll over ivshmem while requests are in flight (us, default 50)");

/*
 * gaes_policy, gpq_policy: where each service sends its work. 0 auto (the
 * load-time choice: the helper only where the measured copies and GPU path
 * cost less CPU time than the kernel's own code and are not slower), 1 gpu
 * (every request the helper path takes), 2 cpu (none).
 */
static const char *const kgpu_policy_names[] = { "auto", "gpu", "cpu" };

static int kgpu_policy_set(const char *val, const struct kernel_param *kp)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(kgpu_policy_names); i++) {
		if (sysfs_streq(val, kgpu_policy_names[i])) {
			WRITE_ONCE(*(unsigned int *)kp->arg, i);
			return 0;
		}
	}
	return -EINVAL;
}

static int kgpu_policy_get(char *buf, const struct kernel_param *kp)
{
	unsigned int v = READ_ONCE(*(unsigned int *)kp->arg);

	return sysfs_emit(buf, "%s\n", kgpu_policy_names[v < 3 ? v : 0]);
}

static const struct kernel_param_ops kgpu_policy_ops = {
	.set = kgpu_policy_set,
	.get = kgpu_policy_get,
};

static unsigned int gaes_policy;
module_param_cb(gaes_policy, &kgpu_policy_ops, &gaes_policy, 0644);
MODULE_PARM_DESC(gaes_policy,
		 "auto (default): each mode goes to the helper only where the load-time measurement says the GPU path costs less CPU and is not slower than the kernel's own AES; gpu: every request the helper path takes; cpu: none");

static unsigned int gpq_policy;
module_param_cb(gpq_policy, &kgpu_policy_ops, &gpq_policy, 0644);
MODULE_PARM_DESC(gpq_policy,
		 "auto (default): syndrome calls go to the helper only from the size where the load-time measurement says the GPU path costs less CPU and is not slower than the raid6 algorithm; gpu: from gpq_threshold (0 when -1); cpu: never");

/* 0: gaes, 1: gpq. */
unsigned int kgpu_shim_policy(unsigned int which)
{
	unsigned int v = which ? READ_ONCE(gpq_policy) : READ_ONCE(gaes_policy);

	return v < 3 ? v : 0;
}

/*
 * One core's copy rate, MB/s (bytes per microsecond): the fastest of three
 * memcpy()s of 32 MiB between two vmalloc buffers, more than a core's share
 * of most last-level caches, as the copies of the kernel path into and out
 * of the region mostly are. 0 when the buffers cannot be had. Process
 * context, at load.
 */
u64 kgpu_shim_time_copy_mbps(void)
{
	const size_t len = 32 << 20;
	u8 *a = vmalloc(len), *b = vmalloc(len);
	u64 best = 0;
	int i;

	if (!a || !b)
		goto out;
	memset(a, 0x5a, len);
	memset(b, 0xa5, len);
	for (i = 0; i < 3; i++) {
		u64 t0 = ktime_get_ns(), ns;

		memcpy(i & 1 ? a : b, i & 1 ? b : a, len);
		ns = ktime_get_ns() - t0;
		if (ns)
			best = max_t(u64, best, (u64)len * 1000 / ns);
		cond_resched();
	}
out:
	vfree(a);
	vfree(b);
	return best;
}

/* The transport parameter parsed at load: 0 auto, 1 device, 2 ivshmem. */
static unsigned int transport_mode;

unsigned int kgpu_shim_transport_mode(void) { return transport_mode; }
unsigned int kgpu_shim_ivshmem_poll_us(void) { return READ_ONCE(ivshmem_poll_us); }
unsigned int kgpu_shim_sync_timeout_ms(void) { return READ_ONCE(sync_timeout_ms); }
unsigned int kgpu_shim_request_timeout_ms(void) { return READ_ONCE(request_timeout_ms); }
unsigned int kgpu_shim_max_region_mb(void) { return READ_ONCE(max_region_mb); }
unsigned int kgpu_shim_spin_timeout_us(void) { return READ_ONCE(spin_timeout_us); }
unsigned int kgpu_shim_heartbeat_timeout_ms(void) { return READ_ONCE(heartbeat_timeout_ms); }
unsigned int kgpu_shim_max_request_kb(void) { return READ_ONCE(max_request_kb); }

/* ---- the state lock ----------------------------------------------------- */

/*
 * Protects the Rust side's attach state, rings, slot table and allocator.
 * Taken with interrupts off: submitters may run in any context.
 */
static DEFINE_SPINLOCK(kgpu_lock);

unsigned long kgpu_shim_lock(void)
{
	unsigned long flags;

	spin_lock_irqsave(&kgpu_lock, flags);
	return flags;
}

void kgpu_shim_unlock(unsigned long flags)
{
	spin_unlock_irqrestore(&kgpu_lock, flags);
}

/* ---- wait queues ---------------------------------------------------------- */

/* The helper sleeps here in poll(). */
static DECLARE_WAIT_QUEUE_HEAD(helper_wq);
/* Synchronous submitters, the self-test and detach sleep here. */
static DECLARE_WAIT_QUEUE_HEAD(waiter_wq);

void kgpu_shim_wake_helper(void)
{
	if (wq_has_sleeper(&helper_wq))
		wake_up_interruptible_poll(&helper_wq, EPOLLIN | EPOLLRDNORM);
}

void kgpu_shim_wake_waiters(void)
{
	if (wq_has_sleeper(&waiter_wq))
		wake_up_all(&waiter_wq);
}

/*
 * Sleeps (uninterruptibly) until *word != 0 or timeout_ms passes.
 * timeout_ms == 0 waits without a bound. Returns 1 when the word is set.
 */
int kgpu_shim_wait_word(const u32 *word, unsigned int timeout_ms)
{
	if (!timeout_ms) {
		wait_event(waiter_wq, smp_load_acquire(word) != 0);
		return 1;
	}
	return wait_event_timeout(waiter_wq, smp_load_acquire(word) != 0,
				  msecs_to_jiffies(timeout_ms)) ? 1 : 0;
}

/* Sleeps until *counter == 0 or timeout_ms passes (0: no bound). 1 when zero. */
int kgpu_shim_wait_zero(const u32 *counter, unsigned int timeout_ms)
{
	if (!timeout_ms) {
		wait_event(waiter_wq, smp_load_acquire(counter) == 0);
		return 1;
	}
	return wait_event_timeout(waiter_wq, smp_load_acquire(counter) == 0,
				  msecs_to_jiffies(timeout_ms)) ? 1 : 0;
}

void kgpu_shim_cpu_relax(void)
{
	cpu_relax();
}

void kgpu_shim_preempt_disable(void)
{
	preempt_disable();
}

void kgpu_shim_preempt_enable(void)
{
	preempt_enable();
}

void kgpu_shim_msleep(unsigned int ms)
{
	msleep(ms);
}

bool kgpu_shim_may_sleep(void)
{
	return preemptible() && !in_interrupt();
}

/* ---- the kernel-side completion poll ------------------------------------- */

static void kgpu_poll_fn(struct work_struct *work)
{
	kgpu_rs_poll_work();
}
static DECLARE_DELAYED_WORK(kgpu_poll_work, kgpu_poll_fn);

/* The ivshmem thread sleeps here between rounds; submissions wake it. */
static DECLARE_WAIT_QUEUE_HEAD(ivs_wq);
static atomic_t ivs_kicks = ATOMIC_INIT(0);
static bool ivs_running;

/*
 * Schedules the completion poll in cq_poll_ms unless it is already pending,
 * and wakes the ivshmem thread (which polls much sooner). Any context.
 */
void kgpu_shim_kick_poll(void)
{
	unsigned int ms = READ_ONCE(cq_poll_ms);

	schedule_delayed_work(&kgpu_poll_work, ms ? msecs_to_jiffies(ms) : 1);
	if (READ_ONCE(ivs_running)) {
		atomic_inc(&ivs_kicks);
		if (wq_has_sleeper(&ivs_wq))
			wake_up(&ivs_wq);
	}
}

void kgpu_shim_cancel_poll(void)
{
	cancel_delayed_work_sync(&kgpu_poll_work);
}

/* ---- pinning the helper's region -------------------------------------- */

/*
 * Pins npages pages of the calling process's memory at uaddr for long-term
 * writable use and maps them contiguously into the kernel. On success stores
 * the page array (to hand back to kgpu_shim_unpin_unmap) and the mapping.
 */
int kgpu_shim_pin_map(unsigned long uaddr, unsigned long npages,
		      struct page ***pages_out, void **vaddr_out)
{
	struct page **pages;
	unsigned long done = 0;
	void *vaddr;
	long ret;

	if (!npages || npages > INT_MAX)
		return -EINVAL;
	pages = kvmalloc_array(npages, sizeof(*pages), GFP_KERNEL | __GFP_ZERO);
	if (!pages)
		return -ENOMEM;

	while (done < npages) {
		ret = pin_user_pages_fast(uaddr + done * PAGE_SIZE,
					  min_t(unsigned long, npages - done, 65536),
					  FOLL_WRITE | FOLL_LONGTERM, pages + done);
		if (ret <= 0) {
			ret = ret ? ret : -EFAULT;
			goto unpin;
		}
		done += ret;
	}

	vaddr = vmap(pages, npages, VM_MAP, PAGE_KERNEL);
	if (!vaddr) {
		ret = -ENOMEM;
		goto unpin;
	}
	*pages_out = pages;
	*vaddr_out = vaddr;
	return 0;

unpin:
	unpin_user_pages(pages, done);
	kvfree(pages);
	return ret;
}

/* Undoes kgpu_shim_pin_map; pages the kernel wrote are marked dirty. */
void kgpu_shim_unpin_unmap(struct page **pages, unsigned long npages, void *vaddr)
{
	vunmap(vaddr);
	unpin_user_pages_dirty_lock(pages, npages, true);
	kvfree(pages);
}

/* ---- copies between user and kernel memory ------------------------------- */

/* Returns 0 or -EFAULT. */
int kgpu_shim_copy_from_user(void *dst, unsigned long src, unsigned long len)
{
	return copy_from_user(dst, (const void __user *)src, len) ? -EFAULT : 0;
}

/* ---- parallel self-test submitters -------------------------------------- */

struct kgpu_par {
	struct work_struct work;
	void (*fn)(void *ctx, unsigned int idx);
	void *ctx;
	unsigned int idx;
};

static void kgpu_par_fn(struct work_struct *work)
{
	struct kgpu_par *p = container_of(work, struct kgpu_par, work);

	p->fn(p->ctx, p->idx);
}

/* Runs fn(ctx, 0..n) on n unbound workqueue workers and waits for all. */
int kgpu_shim_run_parallel(unsigned int n, void (*fn)(void *ctx, unsigned int idx), void *ctx)
{
	struct kgpu_par *p;
	unsigned int i;

	p = kcalloc(n, sizeof(*p), GFP_KERNEL);
	if (!p)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		p[i].fn = fn;
		p[i].ctx = ctx;
		p[i].idx = i;
		INIT_WORK(&p[i].work, kgpu_par_fn);
		queue_work(system_unbound_wq, &p[i].work);
	}
	for (i = 0; i < n; i++)
		flush_work(&p[i].work);
	kfree(p);
	return 0;
}

/* ---- scatterlists ------------------------------------------------------------ */

/*
 * Copies len bytes starting skip bytes into the list to buf; returns the bytes
 * copied (short when the list is shorter). Any context (kmap_local).
 */
size_t kgpu_shim_sg_to_buf(struct scatterlist *sgl, size_t skip, void *buf, size_t len)
{
	return sg_pcopy_to_buffer(sgl, sg_nents(sgl), buf, len, skip);
}

/* The other direction: buf into the list at skip. */
size_t kgpu_shim_sg_from_buf(struct scatterlist *sgl, size_t skip, const void *buf, size_t len)
{
	return sg_pcopy_from_buffer(sgl, sg_nents(sgl), buf, len, skip);
}

/* An array of n scatterlist entries (for the self-test), or NULL. */
struct scatterlist *kgpu_shim_sg_alloc(unsigned int n)
{
	return kcalloc(n, sizeof(struct scatterlist), GFP_KERNEL);
}

void kgpu_shim_sg_free(struct scatterlist *sgl)
{
	kfree(sgl);
}

/*
 * Describes the kmalloc'ed buf[0..len) with entries of `piece` bytes (the last
 * one shorter) in sgl[0..n); returns the number of entries, 0 if n is too small.
 */
unsigned int kgpu_shim_sg_fill(struct scatterlist *sgl, unsigned int n, void *buf, size_t len,
			       size_t piece)
{
	unsigned int i, nents;

	if (!len || !piece)
		return 0;
	nents = DIV_ROUND_UP(len, piece);
	if (nents > n)
		return 0;
	sg_init_table(sgl, nents);
	for (i = 0; i < nents; i++)
		sg_set_buf(&sgl[i], buf + i * piece, min_t(size_t, piece, len - i * piece));
	return nents;
}

/* ---- the kernel's own implementations, for the self-test's answers ------- */

/* A synchronous skcipher ("ecb(aes)", "xts(aes)", ...), or NULL. */
void *kgpu_shim_cipher_new(const char *alg)
{
	struct crypto_sync_skcipher *tfm = crypto_alloc_sync_skcipher(alg, 0, 0);

	return IS_ERR(tfm) ? NULL : tfm;
}

void kgpu_shim_cipher_free(void *tfm)
{
	crypto_free_sync_skcipher(tfm);
}

/*
 * Sets the key and runs one request: src and dst must be kmalloc'ed (linear
 * map), iv 16 bytes or NULL. Returns 0 or a negative errno.
 */
int kgpu_shim_cipher_run(void *tfm, const u8 *key, unsigned int keylen, const u8 *iv,
			 const u8 *src, u8 *dst, unsigned int len, bool encrypt)
{
	struct crypto_sync_skcipher *t = tfm;
	SYNC_SKCIPHER_REQUEST_ON_STACK(req, t);
	struct scatterlist sg_in, sg_out;
	u8 ivbuf[16] = { 0 };
	int ret;

	ret = crypto_sync_skcipher_setkey(t, key, keylen);
	if (ret)
		return ret;
	if (iv)
		memcpy(ivbuf, iv, sizeof(ivbuf));
	sg_init_one(&sg_in, src, len);
	sg_init_one(&sg_out, dst, len);
	skcipher_request_set_sync_tfm(req, t);
	skcipher_request_set_callback(req, 0, NULL, NULL);
	skcipher_request_set_crypt(req, &sg_in, &sg_out, len, ivbuf);
	ret = encrypt ? crypto_skcipher_encrypt(req) : crypto_skcipher_decrypt(req);
	skcipher_request_zero(req);
	return ret;
}

const char *kgpu_shim_raid6_name(void)
{
	return raid6_call.name;
}

/*
 * P and Q of disks - 2 data blocks of unit bytes (unit <= PAGE_SIZE, a
 * multiple of 512) with the kernel's selected raid6 algorithm; data holds the
 * blocks back to back, pq receives P then Q. Page-aligned copies are used
 * because the vector routines need aligned blocks.
 */
int kgpu_shim_raid6_gen(int disks, size_t unit, const u8 *data, u8 *pq)
{
	void **ptrs;
	int i, ret = 0;

	if (disks < 4 || disks > 256 || !unit || unit > PAGE_SIZE || unit % 512)
		return -EINVAL;
	ptrs = kcalloc(disks, sizeof(*ptrs), GFP_KERNEL);
	if (!ptrs)
		return -ENOMEM;
	for (i = 0; i < disks; i++) {
		ptrs[i] = (void *)__get_free_page(GFP_KERNEL);
		if (!ptrs[i]) {
			ret = -ENOMEM;
			goto out;
		}
		if (i < disks - 2)
			memcpy(ptrs[i], data + i * unit, unit);
	}
	/* The kernel's own algorithm, even while gpq is installed as raid6_call:
	 * the self-test must never compare the helper with itself. */
	kgpu_gpq_shim_cpu_gen(disks, unit, ptrs);
	memcpy(pq, ptrs[disks - 2], unit);
	memcpy(pq + unit, ptrs[disks - 1], unit);
out:
	for (i = 0; i < disks; i++)
		if (ptrs[i])
			free_page((unsigned long)ptrs[i]);
	kfree(ptrs);
	return ret;
}

/* ---- ivshmem: the region in a PCI device's memory --------------------------- */

/*
 * qemu's ivshmem-plain (1af4:1110): BAR2 is memory shared with a host file,
 * with no interrupts. One device is served; its BAR is mapped write-back (it
 * is RAM on the host) and handed to kgpu_rs_ivshmem_bind(), and a thread runs
 * kgpu_rs_ivshmem_tick(), sleeping for as long as it says: short sleeps while
 * requests are in flight, else until a submission or the returned time.
 */
struct kgpu_ivs {
	void *base;
	struct task_struct *thread;
};

static int kgpu_ivs_thread(void *arg)
{
	while (!kthread_should_stop()) {
		int kicks = atomic_read(&ivs_kicks);
		unsigned int us = kgpu_rs_ivshmem_tick();

		if (!us) {
			cond_resched();
			continue;
		}
		if (us <= 2000)
			usleep_range(us, us + us / 2 + 1);
		else
			wait_event_interruptible_timeout(ivs_wq,
							 kthread_should_stop() ||
								 atomic_read(&ivs_kicks) != kicks,
							 usecs_to_jiffies(us));
	}
	return 0;
}

static int kgpu_ivs_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct kgpu_ivs *d;
	resource_size_t start, len;
	int ret;

	if (READ_ONCE(ivs_running)) {
		dev_info(&pdev->dev, "kgpu: already serving an ivshmem device; not this one\n");
		return -EBUSY;
	}
	d = kzalloc(sizeof(*d), GFP_KERNEL);
	if (!d)
		return -ENOMEM;
	ret = pci_enable_device_mem(pdev);
	if (ret)
		goto free;
	ret = pci_request_region(pdev, 2, "kgpu");
	if (ret)
		goto disable;
	start = pci_resource_start(pdev, 2);
	len = pci_resource_len(pdev, 2);
	if (!len || !(pci_resource_flags(pdev, 2) & IORESOURCE_MEM)) {
		ret = -ENODEV;
		goto release;
	}
	d->base = memremap(start, len, MEMREMAP_WB);
	if (!d->base) {
		ret = -ENOMEM;
		goto release;
	}
	/* -ENODEV: not a kgpu region (transport=auto); left to other drivers. */
	ret = kgpu_rs_ivshmem_bind(d->base, len);
	if (ret)
		goto unmap;
	WRITE_ONCE(ivs_running, true);
	d->thread = kthread_run(kgpu_ivs_thread, d, "kgpu-ivshmem");
	if (IS_ERR(d->thread)) {
		ret = PTR_ERR(d->thread);
		WRITE_ONCE(ivs_running, false);
		kgpu_rs_ivshmem_unbind();
		goto unmap;
	}
	pci_set_drvdata(pdev, d);
	dev_info(&pdev->dev, "kgpu: ivshmem region %llu MiB at %pa\n",
		 (unsigned long long)len >> 20, &start);
	return 0;

unmap:
	memunmap(d->base);
release:
	pci_release_region(pdev, 2);
disable:
	pci_disable_device(pdev);
free:
	kfree(d);
	return ret;
}

static void kgpu_ivs_remove(struct pci_dev *pdev)
{
	struct kgpu_ivs *d = pci_get_drvdata(pdev);

	/* No tick runs after this; then the region is detached and let go. */
	kthread_stop(d->thread);
	WRITE_ONCE(ivs_running, false);
	kgpu_rs_ivshmem_unbind();
	memunmap(d->base);
	pci_release_region(pdev, 2);
	pci_disable_device(pdev);
	kfree(d);
}

static const struct pci_device_id kgpu_ivs_ids[] = {
	{ PCI_DEVICE(0x1af4, 0x1110) },
	{ }
};
/* No MODULE_DEVICE_TABLE: an ivshmem device alone must not load kgpu. */

static struct pci_driver kgpu_ivs_driver = {
	.name = "kgpu-ivshmem",
	.id_table = kgpu_ivs_ids,
	.probe = kgpu_ivs_probe,
	.remove = kgpu_ivs_remove,
};

static bool kgpu_ivs_registered;

/* ---- /dev/kgpu ------------------------------------------------------------ */

static int kgpu_open(struct inode *inode, struct file *file)
{
	/* The node is 0600; refuse anyone without admin rights even if relaxed. */
	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	return kgpu_rs_open();
}

static int kgpu_release(struct inode *inode, struct file *file)
{
	kgpu_rs_release();
	return 0;
}

static __poll_t kgpu_poll(struct file *file, poll_table *wait)
{
	unsigned int m;
	__poll_t mask = 0;

	poll_wait(file, &helper_wq, wait);
	m = kgpu_rs_poll_mask();
	if (m & KGPU_POLL_IN)
		mask |= EPOLLIN | EPOLLRDNORM;
	if (m & KGPU_POLL_HUP)
		mask |= EPOLLHUP;
	return mask;
}

static long kgpu_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	return kgpu_rs_ioctl(cmd, arg);
}

static const struct file_operations kgpu_fops = {
	.owner = THIS_MODULE,
	.open = kgpu_open,
	.release = kgpu_release,
	.poll = kgpu_poll,
	.unlocked_ioctl = kgpu_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice kgpu_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "kgpu",
	.fops = &kgpu_fops,
	.mode = 0600,
};

/* ---- debugfs ------------------------------------------------------------- */

#define KGPU_TEXT_MAX 4096

/* Renders a Rust text report into a bounded buffer and copies it to the reader. */
ssize_t kgpu_shim_read_text(char __user *ubuf, size_t count, loff_t *ppos,
			    size_t (*fill)(char *buf, size_t len))
{
	char *buf;
	size_t len;
	ssize_t ret;

	buf = kmalloc(KGPU_TEXT_MAX, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	len = fill(buf, KGPU_TEXT_MAX);
	ret = simple_read_from_buffer(ubuf, count, ppos, buf, min_t(size_t, len, KGPU_TEXT_MAX));
	kfree(buf);
	return ret;
}

static ssize_t stats_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	return kgpu_shim_read_text(ubuf, count, ppos, kgpu_rs_stats);
}

static const struct file_operations stats_fops = {
	.owner = THIS_MODULE,
	.read = stats_read,
	.llseek = default_llseek,
};

/*
 * Command files: a command written to one runs in Rust (kgpu_rs_command) and
 * its report is read back from the same file. Slot 0 is the self-test
 * (debugfs kgpu/selftest); slot 1 + i is service i of the module's service
 * table, for a service that asks for one (kgpu/<name>).
 */
struct kgpu_cmd_file {
	struct mutex lock;
	struct dentry *dentry;
	char report[512];
};

static struct kgpu_cmd_file kgpu_cmd_files[KGPU_CMD_FILES];
static struct dentry *kgpu_debugfs;

static ssize_t cmd_write(struct file *file, const char __user *ubuf, size_t count, loff_t *ppos)
{
	struct kgpu_cmd_file *f = file->private_data;
	unsigned int slot = f - kgpu_cmd_files;
	char cmd[64];
	char *report;
	long ret;

	if (count >= sizeof(cmd))
		return -EINVAL;
	if (copy_from_user(cmd, ubuf, count))
		return -EFAULT;
	cmd[count] = 0;
	report = kzalloc(sizeof(f->report), GFP_KERNEL);
	if (!report)
		return -ENOMEM;
	/* One command per file at a time. */
	if (mutex_lock_interruptible(&f->lock)) {
		kfree(report);
		return -ERESTARTSYS;
	}
	ret = kgpu_rs_command(slot, cmd, count, report, sizeof(f->report) - 1);
	/* A refused command keeps the last report unless it says why. */
	if (ret >= 0 || report[0])
		strscpy(f->report, report, sizeof(f->report));
	mutex_unlock(&f->lock);
	kfree(report);
	return ret < 0 ? ret : count;
}

static ssize_t cmd_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	struct kgpu_cmd_file *f = file->private_data;
	ssize_t ret;

	mutex_lock(&f->lock);
	ret = simple_read_from_buffer(ubuf, count, ppos, f->report, strlen(f->report));
	mutex_unlock(&f->lock);
	return ret;
}

static const struct file_operations cmd_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.read = cmd_read,
	.write = cmd_write,
	.llseek = default_llseek,
};

int kgpu_shim_command_file(unsigned int slot, const char *name)
{
	struct kgpu_cmd_file *f;

	if (slot >= KGPU_CMD_FILES || kgpu_cmd_files[slot].dentry)
		return -EINVAL;
	f = &kgpu_cmd_files[slot];
	mutex_init(&f->lock);
	strscpy(f->report, "never run\n", sizeof(f->report));
	f->dentry = debugfs_create_file(name, 0600, kgpu_debugfs, f, &cmd_fops);
	/* debugfs failures are not fatal (the files are for testing). */
	if (IS_ERR(f->dentry))
		f->dentry = NULL;
	return 0;
}

/* Waits for a command running in the file to finish (debugfs_remove does). */
void kgpu_shim_command_file_remove(unsigned int slot)
{
	if (slot >= KGPU_CMD_FILES)
		return;
	debugfs_remove(kgpu_cmd_files[slot].dentry);
	kgpu_cmd_files[slot].dentry = NULL;
}


/* ---- registration ----------------------------------------------------------- */

int kgpu_shim_init(void)
{
	int ret;

	if (!strcmp(transport, "auto")) {
		transport_mode = 0;
	} else if (!strcmp(transport, "device")) {
		transport_mode = 1;
	} else if (!strcmp(transport, "ivshmem")) {
		transport_mode = 2;
	} else {
		pr_err("kgpu: transport=%s: use auto, device or ivshmem\n", transport);
		return -EINVAL;
	}
	ret = misc_register(&kgpu_misc);
	if (ret)
		return ret;
	kgpu_debugfs = debugfs_create_dir("kgpu", NULL);
	debugfs_create_file("stats", 0400, kgpu_debugfs, NULL, &stats_fops);
	kgpu_shim_command_file(0, "selftest");
	if (transport_mode != 1) {
		ret = pci_register_driver(&kgpu_ivs_driver);
		if (ret) {
			kgpu_shim_command_file_remove(0);
			debugfs_remove_recursive(kgpu_debugfs);
			misc_deregister(&kgpu_misc);
			return ret;
		}
		kgpu_ivs_registered = true;
	}
	return 0;
}

void kgpu_shim_exit(void)
{
	if (kgpu_ivs_registered) {
		pci_unregister_driver(&kgpu_ivs_driver);
		kgpu_ivs_registered = false;
	}
	kgpu_shim_command_file_remove(0);
	debugfs_remove_recursive(kgpu_debugfs);
	misc_deregister(&kgpu_misc);
	cancel_delayed_work_sync(&kgpu_poll_work);
}
