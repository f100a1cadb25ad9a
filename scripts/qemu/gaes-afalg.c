// SPDX-License-Identifier: GPL-2.0-only
/*
 * gaes-afalg: in-guest AF_ALG check of a gaes skcipher against the kernel's
 * generic implementation of the same mode.
 *
 *   gaes-afalg MODE [ROUNDS]      MODE: ecb, cbc, ctr or xts
 *
 * For every key size of the mode and many lengths (block multiples, odd
 * lengths where the mode takes them: CTR tails, XTS ciphertext stealing, up to
 * 64 KiB), with random keys, IVs and data: encrypts and decrypts through
 * "gaes_MODE" and through "MODE(aes-generic)" and compares byte for byte; the
 * decryption must give the plaintext back. For CBC and CTR it also checks
 * the output IV: two requests chained through the socket's IV (no IV on the
 * second) must equal one request over both parts. For ECB it checks the
 * FIPS-197 known answers. Prints one summary line; exits 1 on any mismatch.
 *
 * Built statically by scripts/qemu-test (gcc -static) and run by
 * scripts/qemu/tests-gaes.sh.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if_alg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SOL_ALG
#define SOL_ALG 279
#endif

#define MAXLEN 65536

static int urandom = -1;

static void rnd(void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = read(urandom, p, len);

		if (n <= 0) {
			perror("urandom");
			exit(2);
		}
		p += n;
		len -= n;
	}
}

static int tfm_open(const char *name)
{
	struct sockaddr_alg sa = { .salg_family = AF_ALG, .salg_type = "skcipher" };
	int fd;

	strncpy((char *)sa.salg_name, name, sizeof(sa.salg_name) - 1);
	fd = socket(AF_ALG, SOCK_SEQPACKET, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		fprintf(stderr, "bind %s: %s\n", name, strerror(errno));
		exit(2);
	}
	return fd;
}

/* An operation socket of tfm with key. */
static int op_open(int tfm, const uint8_t *key, int klen)
{
	int op;

	if (setsockopt(tfm, SOL_ALG, ALG_SET_KEY, key, klen) < 0) {
		fprintf(stderr, "setkey (%d bytes): %s\n", klen, strerror(errno));
		exit(2);
	}
	op = accept(tfm, NULL, 0);
	if (op < 0) {
		perror("accept");
		exit(2);
	}
	return op;
}

/* One request on op; iv NULL keeps the socket's IV (the previous output IV). */
static int run(int op, int enc, const uint8_t *iv, const uint8_t *in, uint8_t *out, size_t len)
{
	char cbuf[CMSG_SPACE(sizeof(uint32_t)) + CMSG_SPACE(sizeof(struct af_alg_iv) + 16)] = {};
	struct msghdr msg = {};
	struct iovec iov = { .iov_base = (void *)in, .iov_len = len };
	struct cmsghdr *c;
	size_t got = 0;

	msg.msg_control = cbuf;
	msg.msg_controllen = CMSG_SPACE(sizeof(uint32_t)) +
			     (iv ? CMSG_SPACE(sizeof(struct af_alg_iv) + 16) : 0);
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_ALG;
	c->cmsg_type = ALG_SET_OP;
	c->cmsg_len = CMSG_LEN(sizeof(uint32_t));
	*(uint32_t *)CMSG_DATA(c) = enc ? ALG_OP_ENCRYPT : ALG_OP_DECRYPT;
	if (iv) {
		struct af_alg_iv *a;

		c = CMSG_NXTHDR(&msg, c);
		c->cmsg_level = SOL_ALG;
		c->cmsg_type = ALG_SET_IV;
		c->cmsg_len = CMSG_LEN(sizeof(struct af_alg_iv) + 16);
		a = (struct af_alg_iv *)CMSG_DATA(c);
		a->ivlen = 16;
		memcpy(a->iv, iv, 16);
	}
	if (sendmsg(op, &msg, 0) != (ssize_t)len)
		return -errno;
	while (got < len) {
		ssize_t n = read(op, out + got, len - got);

		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		got += n;
	}
	return 0;
}

static const char *mode;
static long checks, failures;

static void fail(const char *what, int klen, size_t len)
{
	failures++;
	if (failures <= 10)
		fprintf(stderr, "MISMATCH %s: %s key %d bytes, length %zu\n", mode, what, klen, len);
}

/* Encrypt and decrypt len bytes with both drivers; compare. */
static void check_one(int g, int r, int klen, size_t len, int has_iv)
{
	static uint8_t key[64], iv[16], pt[MAXLEN], cg[MAXLEN], cr[MAXLEN], dg[MAXLEN];
	int og, orf, eg, er;

	rnd(key, klen);
	rnd(iv, 16);
	rnd(pt, len);
	og = op_open(g, key, klen);
	orf = op_open(r, key, klen);
	eg = run(og, 1, has_iv ? iv : NULL, pt, cg, len);
	er = run(orf, 1, has_iv ? iv : NULL, pt, cr, len);
	checks++;
	if (eg != er)
		fail("encryption status differs", klen, len);
	else if (!eg && memcmp(cg, cr, len))
		fail("ciphertext differs", klen, len);
	if (!eg) {
		checks++;
		if (run(og, 0, has_iv ? iv : NULL, cg, dg, len) || memcmp(dg, pt, len))
			fail("decryption", klen, len);
	}
	close(og);
	close(orf);
}

/* Output IV: two chained requests through gaes == one request through the reference. */
static void check_chain(int g, int r, int klen, size_t a, size_t b)
{
	static uint8_t key[64], iv[16], pt[MAXLEN], cg[MAXLEN], cr[MAXLEN];
	int og, orf, enc;

	for (enc = 1; enc >= 0; enc--) {
		rnd(key, klen);
		rnd(iv, 16);
		rnd(pt, a + b);
		og = op_open(g, key, klen);
		orf = op_open(r, key, klen);
		checks++;
		if (run(og, enc, iv, pt, cg, a) || run(og, enc, NULL, pt + a, cg + a, b) ||
		    run(orf, enc, iv, pt, cr, a + b) || memcmp(cg, cr, a + b))
			fail(enc ? "chained encryption (output IV)" : "chained decryption (output IV)",
			     klen, a + b);
		close(og);
		close(orf);
	}
}

static int hexval(char c)
{
	return c <= '9' ? c - '0' : c - 'a' + 10;
}

static void unhex(const char *s, uint8_t *out)
{
	for (; s[0] && s[1]; s += 2)
		*out++ = hexval(s[0]) << 4 | hexval(s[1]);
}

static void check_fips197(int g)
{
	static const char *const keys[] = {
		"000102030405060708090a0b0c0d0e0f",
		"000102030405060708090a0b0c0d0e0f1011121314151617",
		"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
	};
	static const char *const cts[] = {
		"69c4e0d86a7b0430d8cdb78070b4c55a",
		"dda97ca4864cdfe06eaf70a0ec0d7191",
		"8ea2b7ca516745bfeafc49904b496089",
	};
	uint8_t key[32], pt[16], ct[16], out[16];
	int i, op;

	unhex("00112233445566778899aabbccddeeff", pt);
	for (i = 0; i < 3; i++) {
		unhex(keys[i], key);
		unhex(cts[i], ct);
		op = op_open(g, key, 16 + 8 * i);
		checks++;
		if (run(op, 1, NULL, pt, out, 16) || memcmp(out, ct, 16))
			fail("FIPS-197 known answer", 16 + 8 * i, 16);
		close(op);
	}
}

int main(int argc, char **argv)
{
	static const size_t block_lens[] = { 16, 32, 48, 64, 256, 496, 512, 1024, 4096,
					     4112, 8192, 16384, 65536 };
	static const size_t odd_lens[] = { 1, 15, 17, 31, 100, 511, 513, 4095, 4097, 65535 };
	char gname[64], rname[64];
	int keys[3], nkeys, i, k, rounds, has_iv, odd_min;
	size_t n;
	int g, r;

	if (argc < 2) {
		fprintf(stderr, "usage: gaes-afalg ecb|cbc|ctr|xts [ROUNDS]\n");
		return 2;
	}
	mode = argv[1];
	rounds = argc > 2 ? atoi(argv[2]) : 1;
	urandom = open("/dev/urandom", O_RDONLY);
	if (urandom < 0) {
		perror("/dev/urandom");
		return 2;
	}
	snprintf(gname, sizeof(gname), "gaes_%s", mode);
	/* xts(aes-generic) is instantiated as xts(ecb(aes-generic)). */
	if (!strcmp(mode, "xts"))
		snprintf(rname, sizeof(rname), "xts(ecb(aes-generic))");
	else
		snprintf(rname, sizeof(rname), "%s(aes-generic)", mode);
	has_iv = strcmp(mode, "ecb") != 0;
	if (!strcmp(mode, "xts")) {
		keys[0] = 32, keys[1] = 48, keys[2] = 64, nkeys = 3;
		odd_min = 16; /* ciphertext stealing */
	} else if (!strcmp(mode, "ctr")) {
		keys[0] = 16, keys[1] = 24, keys[2] = 32, nkeys = 3;
		odd_min = 1;
	} else if (!strcmp(mode, "ecb") || !strcmp(mode, "cbc")) {
		keys[0] = 16, keys[1] = 24, keys[2] = 32, nkeys = 3;
		odd_min = -1;
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		return 2;
	}
	g = tfm_open(gname);
	r = tfm_open(rname);
	for (; rounds > 0; rounds--) {
		for (k = 0; k < nkeys; k++) {
			for (i = 0; i < (int)(sizeof(block_lens) / sizeof(block_lens[0])); i++)
				check_one(g, r, keys[k], block_lens[i], has_iv);
			for (i = 0; odd_min > 0 && i < (int)(sizeof(odd_lens) / sizeof(odd_lens[0])); i++)
				if (odd_lens[i] >= (size_t)odd_min)
					check_one(g, r, keys[k], odd_lens[i], has_iv);
			/* Random lengths. */
			for (i = 0; i < 8; i++) {
				rnd(&n, sizeof(n));
				n = n % MAXLEN + 1;
				if (odd_min < 0)
					n = (n + 15) & ~(size_t)15;
				if (n < 16)
					n = 16;
				if (n > MAXLEN)
					n = MAXLEN;
				check_one(g, r, keys[k], n, has_iv);
			}
			if (!strcmp(mode, "cbc") || !strcmp(mode, "ctr")) {
				check_chain(g, r, keys[k], 512, 4096);
				check_chain(g, r, keys[k], 16, 48);
			}
		}
		if (!has_iv)
			check_fips197(g);
	}
	printf("%s: %ld checks against %s, %ld mismatches\n", gname, checks, rname, failures);
	return failures ? 1 : 0;
}
