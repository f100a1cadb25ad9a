// SPDX-License-Identifier: GPL-2.0-only
/*
 * kgpu gpq: the raid6 glue Linux 6.12's Rust crate has no abstraction for
 * (the `gpq` RAID6 algorithm's logic is in gpq.rs).
 *
 * What that crate lacks: the `struct raid6_calls` instance with its
 * trampolines, reading and writing the exported `raid6_call`, context
 * queries, per-CPU scatterlists and output buffers, the debugfs file and the
 * module parameters of gpq.
 */

#include <linux/debugfs.h>
#include <linux/hardirq.h>
#include <linux/irqflags.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/preempt.h>
#include <linux/random.h>
#include <linux/raid/pq.h>
#include <linux/rcupdate.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/cpumask.h>
#include <linux/smp.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <linux/workqueue.h>

#include "kgpu_shim.h"

/* ---- module parameters ---------------------------------------------------- */

static bool gpq_enable = true;
module_param(gpq_enable, bool, 0444);
MODULE_PARM_DESC(gpq_enable,
		 "Install the gpq RAID6 algorithm as raid6_call at load (default on)");

static long gpq_threshold = -1;
module_param(gpq_threshold, long, 0644);
MODULE_PARM_DESC(gpq_threshold,
		 "gpq sends a syndrome call to the helper only from this size on (disks x bytes per disk), whatever gpq_policy says unless it is cpu; -1 (default): the policy's own (auto: the load-time choice; gpu: every call)");

static unsigned int gpq_spin_us = 500;
module_param(gpq_spin_us, uint, 0644);
MODULE_PARM_DESC(gpq_spin_us,
		 "How long a gpq call spins for the helper's answer before computing on the CPU (us, default 500)");

static bool gpq_verify;
module_param(gpq_verify, bool, 0644);
MODULE_PARM_DESC(gpq_verify,
		 "Recompute every helper answer with the CPU algorithm, count and discard mismatches (default off)");

static unsigned int gpq_wake_us = 200;
module_param(gpq_wake_us, uint, 0644);
MODULE_PARM_DESC(gpq_wake_us,
		 "Extra spin allowed when the helper sleeps: the request wakes it (us, default 200; 0 = compute on the CPU while it sleeps)");

static unsigned int gpq_max_spinners;
module_param(gpq_max_spinners, uint, 0644);
MODULE_PARM_DESC(gpq_max_spinners,
		 "Most gpq calls waiting for the helper at once; the others compute on the CPU at once (0, the default, and at most: the online CPUs less one)");

bool kgpu_gpq_shim_param_enable(void) { return READ_ONCE(gpq_enable); }
long kgpu_gpq_shim_param_threshold(void) { return READ_ONCE(gpq_threshold); }
unsigned int kgpu_gpq_shim_param_spin_us(void) { return READ_ONCE(gpq_spin_us); }
bool kgpu_gpq_shim_param_verify(void) { return READ_ONCE(gpq_verify); }
unsigned int kgpu_gpq_shim_param_wake_us(void) { return READ_ONCE(gpq_wake_us); }

/* ---- the raid6_calls instance ---------------------------------------------- */

static struct raid6_calls gpq_saved;

static void gpq_gen_syndrome(int disks, size_t bytes, void **ptrs)
{
	kgpu_gpq_rs_gen(disks, bytes, ptrs);
}

static void gpq_xor_syndrome(int disks, int start, int stop, size_t bytes, void **ptrs)
{
	kgpu_gpq_rs_xor(disks, start, stop, bytes, ptrs);
}

static int gpq_valid(void)
{
	return 1;
}

static const char gpq_name[] = "gpq";

/*
 * Saves raid6_call and installs gpq over it. xor_syndrome is installed only
 * when the saved algorithm has one: md turns read-modify-write on for arrays
 * created while an xor_syndrome exists, and async_pq BUG()s if it later
 * disappears (restoring an algorithm without one).
 */
int kgpu_gpq_shim_install(void)
{
	if (READ_ONCE(raid6_call.gen_syndrome) == gpq_gen_syndrome)
		return -EBUSY;
	if (!raid6_call.gen_syndrome)
		return -ENODEV;
	gpq_saved = raid6_call;
	/*
	 * Field by field: a reader may see a mix of old and new pointers, each
	 * of which computes the same result.
	 */
	WRITE_ONCE(raid6_call.valid, gpq_valid);
	WRITE_ONCE(raid6_call.gen_syndrome, gpq_gen_syndrome);
	if (gpq_saved.xor_syndrome)
		WRITE_ONCE(raid6_call.xor_syndrome, gpq_xor_syndrome);
	WRITE_ONCE(raid6_call.name, gpq_name);
	return 0;
}

/*
 * Puts the saved algorithm back and waits until every caller that may have
 * read a gpq pointer is past that read: callers hold no lock, so this relies
 * on RCU (a non-preemptible section spans "load pointer, call, enter the
 * counted region"); where the kernel is preemptible, tasks-RCU also covers
 * callers preempted in between. The caller then waits for gpq's own count
 * of calls inside to reach zero.
 */
void kgpu_gpq_shim_restore(void)
{
	WRITE_ONCE(raid6_call.gen_syndrome, gpq_saved.gen_syndrome);
	WRITE_ONCE(raid6_call.xor_syndrome, gpq_saved.xor_syndrome);
	WRITE_ONCE(raid6_call.valid, gpq_saved.valid);
	WRITE_ONCE(raid6_call.name, gpq_saved.name);
	kgpu_gpq_shim_sync();
}

void kgpu_gpq_shim_sync(void)
{
	synchronize_rcu();
#ifdef CONFIG_TASKS_RCU
	synchronize_rcu_tasks();
#endif
}

bool kgpu_gpq_shim_has_xor(void)
{
	return gpq_saved.xor_syndrome != NULL;
}

const char *kgpu_gpq_shim_saved_name(void)
{
	return gpq_saved.name ? gpq_saved.name : "none";
}

const char *kgpu_gpq_shim_current_name(void)
{
	const char *n = READ_ONCE(raid6_call.name);

	return n ? n : "none";
}

/*
 * The CPU algorithm: the saved one while gpq is (or was) installed, else
 * raid6_call itself (which is then not gpq).
 */
void kgpu_gpq_shim_cpu_gen(int disks, size_t bytes, void **ptrs)
{
	if (gpq_saved.gen_syndrome)
		gpq_saved.gen_syndrome(disks, bytes, ptrs);
	else
		raid6_call.gen_syndrome(disks, bytes, ptrs);
}

void kgpu_gpq_shim_cpu_xor(int disks, int start, int stop, size_t bytes, void **ptrs)
{
	if (gpq_saved.xor_syndrome)
		gpq_saved.xor_syndrome(disks, start, stop, bytes, ptrs);
	else
		raid6_call.xor_syndrome(disks, start, stop, bytes, ptrs);
}

/*
 * Whether a call may spin for the helper: not in hard or soft interrupt
 * context nor NMI, and not with interrupts off (spinning there would hold
 * off this CPU's interrupts for the whole bound); and only with another CPU
 * online, since the helper cannot run on this one while it spins with
 * preemption off.
 */
bool kgpu_gpq_shim_may_spin(void)
{
	return !in_interrupt() && !irqs_disabled() && num_online_cpus() > 1;
}

/* gpq_max_spinners, never more than leaves one CPU free. */
unsigned int kgpu_gpq_shim_max_spinners(void)
{
	unsigned int cpus = num_online_cpus(), cap = cpus > 1 ? cpus - 1 : 0;
	unsigned int p = READ_ONCE(gpq_max_spinners);

	return p && p < cap ? p : cap;
}

void kgpu_gpq_shim_preempt_disable(void)
{
	preempt_disable();
}

void kgpu_gpq_shim_preempt_enable(void)
{
	preempt_enable();
}

void kgpu_gpq_shim_cond_resched(void)
{
	cond_resched();
}

/* ---- per-CPU buffers ------------------------------------------------------- */

struct gpq_pcpu {
	struct scatterlist sg[GPQ_MAX_SG];
	u8 *bounce;	/* 2 * GPQ_MAX_UNIT: P then Q as the helper returns them */
	bool busy;	/* a gpq call of this CPU uses the buffers */
};

static struct gpq_pcpu **gpq_pcpu;
/* GPQ_MAX_UNIT zero bytes: the data disks below `start` of an xor_syndrome. */
static u8 *gpq_zero;

/*
 * Takes this CPU's buffers with preemption off; false (preemption back on)
 * when a gpq call of this CPU already holds them (a completion callback run
 * while spinning that called into raid6 again).
 */
bool kgpu_gpq_shim_pcpu_begin(struct scatterlist **sg, u8 **bounce)
{
	struct gpq_pcpu *pc;

	preempt_disable();
	if (!gpq_pcpu)
		goto no;
	pc = gpq_pcpu[smp_processor_id()];
	if (!pc || pc->busy)
		goto no;
	pc->busy = true;
	*sg = pc->sg;
	*bounce = pc->bounce;
	return true;
no:
	preempt_enable();
	return false;
}

void kgpu_gpq_shim_pcpu_end(void)
{
	gpq_pcpu[smp_processor_id()]->busy = false;
	preempt_enable();
}

/*
 * Describes, in sg, lead_zero zero blocks, then ptrs[start..=stop], then
 * trail_zero zero blocks, each of `bytes` bytes. Returns the number of
 * entries, or 0 when they do not fit, `bytes` exceeds GPQ_MAX_UNIT, or a
 * block is not in the linear map (a scatterlist needs its page).
 */
unsigned int kgpu_gpq_shim_sg_build(struct scatterlist *sg, void **ptrs, int start, int stop,
				    unsigned int lead_zero, unsigned int trail_zero, size_t bytes)
{
	unsigned int n, k = 0;
	int i;

	if (start < 0 || stop < start || bytes > GPQ_MAX_UNIT)
		return 0;
	n = lead_zero + (unsigned int)(stop - start + 1) + trail_zero;
	if (n > GPQ_MAX_SG)
		return 0;
	sg_init_table(sg, n);
	for (i = 0; i < lead_zero; i++)
		sg_set_buf(&sg[k++], gpq_zero, bytes);
	for (i = start; i <= stop; i++) {
		if (!virt_addr_valid(ptrs[i]) || !virt_addr_valid((u8 *)ptrs[i] + bytes - 1))
			return 0;
		sg_set_buf(&sg[k++], ptrs[i], bytes);
	}
	for (i = 0; i < trail_zero; i++)
		sg_set_buf(&sg[k++], gpq_zero, bytes);
	return n;
}

/* disks blocks of `bytes` (random data, linear map), or NULL. */
void **kgpu_gpq_shim_bench_alloc(int disks, size_t bytes)
{
	void **ptrs;
	int i;

	if (disks < 4 || disks > GPQ_MAX_SG || !bytes || bytes > GPQ_MAX_UNIT)
		return NULL;
	ptrs = kcalloc(disks, sizeof(*ptrs), GFP_KERNEL);
	if (!ptrs)
		return NULL;
	for (i = 0; i < disks; i++) {
		ptrs[i] = kmalloc(bytes, GFP_KERNEL);
		if (!ptrs[i]) {
			kgpu_gpq_shim_bench_free(ptrs, disks);
			return NULL;
		}
		get_random_bytes(ptrs[i], bytes);
	}
	return ptrs;
}

void kgpu_gpq_shim_bench_free(void **ptrs, int disks)
{
	int i;

	if (!ptrs)
		return;
	for (i = 0; i < disks; i++)
		kfree(ptrs[i]);
	kfree(ptrs);
}

/* ---- debugfs: /sys/kernel/debug/kgpu/gpq ---------------------------------- */

static ssize_t gpq_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	return kgpu_shim_read_text(ubuf, count, ppos, kgpu_gpq_rs_show);
}

static ssize_t gpq_write(struct file *file, const char __user *ubuf, size_t count, loff_t *ppos)
{
	char cmd[32];
	long ret;

	if (count >= sizeof(cmd))
		return -EINVAL;
	if (copy_from_user(cmd, ubuf, count))
		return -EFAULT;
	cmd[count] = 0;
	ret = kgpu_gpq_rs_command(cmd, count);
	return ret < 0 ? ret : count;
}

static const struct file_operations gpq_fops = {
	.owner = THIS_MODULE,
	.read = gpq_read,
	.write = gpq_write,
	.llseek = default_llseek,
};

static struct dentry *gpq_debugfs;

/* ---- setup ----------------------------------------------------------------- */

static void gpq_free_buffers(void)
{
	unsigned int cpu;

	if (gpq_pcpu) {
		for_each_possible_cpu(cpu) {
			if (gpq_pcpu[cpu]) {
				kvfree(gpq_pcpu[cpu]->bounce);
				kfree(gpq_pcpu[cpu]);
			}
		}
		kfree(gpq_pcpu);
		gpq_pcpu = NULL;
	}
	kfree(gpq_zero);
	gpq_zero = NULL;
}

/* Buffers and the debugfs file (in the kgpu directory shim.c created). */
int kgpu_gpq_shim_init(size_t max_unit, unsigned int max_sg)
{
	struct dentry *dir;
	unsigned int cpu;

	if (max_unit != GPQ_MAX_UNIT || max_sg != GPQ_MAX_SG) {
		pr_err("kgpu: gpq: limits differ from gpq.rs\n");
		return -EINVAL;
	}
	gpq_zero = kzalloc(GPQ_MAX_UNIT, GFP_KERNEL);
	gpq_pcpu = kcalloc(nr_cpu_ids, sizeof(*gpq_pcpu), GFP_KERNEL);
	if (!gpq_zero || !gpq_pcpu)
		goto nomem;
	for_each_possible_cpu(cpu) {
		struct gpq_pcpu *pc = kzalloc(sizeof(*pc), GFP_KERNEL);

		if (!pc)
			goto nomem;
		gpq_pcpu[cpu] = pc;
		pc->bounce = kvmalloc(2 * GPQ_MAX_UNIT, GFP_KERNEL);
		if (!pc->bounce)
			goto nomem;
	}
	dir = debugfs_lookup("kgpu", NULL);
	if (dir) {
		gpq_debugfs = debugfs_create_file("gpq", 0600, dir, NULL, &gpq_fops);
		dput(dir);
	}
	return 0;
nomem:
	gpq_free_buffers();
	return -ENOMEM;
}

/* After kgpu_gpq_shim_restore (nothing can enter gpq any more). */
void kgpu_gpq_shim_exit(void)
{
	debugfs_remove(gpq_debugfs);
	gpq_debugfs = NULL;
	gpq_free_buffers();
}
