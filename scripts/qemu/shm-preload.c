/*
 * System V shared memory for a kernel without CONFIG_SYSVIPC (the test
 * kernel), preloaded into fio in the soak (LD_PRELOAD): fio keeps its job
 * table in a shmget() segment that it attaches before it starts the jobs.
 * Here a segment is an anonymous shared mapping, created at the first
 * shmat() and inherited by the processes forked afterwards; that is all fio
 * needs. Private keys only (IPC_PRIVATE or IPC_CREAT), at most 64 segments.
 * SPDX-License-Identifier: GPL-2.0-only
 */
#include <errno.h>
#include <stddef.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>

#define NSEG 64

static struct seg {
	size_t size;
	void *addr;
	int used;
} segs[NSEG];

int shmget(key_t key, size_t size, int flags)
{
	(void)key;
	(void)flags;
	for (int i = 0; i < NSEG; i++) {
		if (!segs[i].used) {
			segs[i].used = 1;
			segs[i].size = size;
			segs[i].addr = NULL;
			return i + 1;
		}
	}
	errno = ENOSPC;
	return -1;
}

void *shmat(int id, const void *want, int flags)
{
	struct seg *s;

	(void)want;
	(void)flags;
	if (id < 1 || id > NSEG || !segs[id - 1].used) {
		errno = EINVAL;
		return (void *)-1;
	}
	s = &segs[id - 1];
	if (!s->addr) {
		void *p = mmap(NULL, s->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

		if (p == MAP_FAILED)
			return (void *)-1;
		s->addr = p;
	}
	return s->addr;
}

int shmdt(const void *addr)
{
	for (int i = 0; i < NSEG; i++) {
		if (segs[i].used && segs[i].addr == addr) {
			munmap(segs[i].addr, segs[i].size);
			segs[i].addr = NULL;
			return 0;
		}
	}
	errno = EINVAL;
	return -1;
}

int shmctl(int id, int cmd, struct shmid_ds *buf)
{
	if (id < 1 || id > NSEG || !segs[id - 1].used) {
		errno = EINVAL;
		return -1;
	}
	if (cmd == IPC_RMID) {
		/* Freed at shmdt(), as the kernel would after the last detach. */
		if (!segs[id - 1].addr)
			segs[id - 1].used = 0;
		return 0;
	}
	if (cmd == IPC_STAT && buf) {
		buf->shm_segsz = segs[id - 1].size;
		buf->shm_nattch = segs[id - 1].addr ? 1 : 0;
		return 0;
	}
	return 0;
}
