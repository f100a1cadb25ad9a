// SPDX-License-Identifier: GPL-2.0-only
/*
 * gaes-ecryptfs-key: puts an eCryptfs passphrase auth token in a new session
 * keyring and runs a command (the mount) with it, without ecryptfs-utils.
 *
 *   gaes-ecryptfs-key SIG KEYHEX COMMAND [ARG...]
 *
 * SIG: the token's signature, 16 hex digits (the mount's ecryptfs_sig=).
 * KEYHEX: the session key encryption key (the key that wraps each file's
 * key), 16 to 64 bytes in hex; eCryptfs uses its first ecryptfs_key_bytes
 * bytes. ecryptfs-utils derives it from a passphrase (salted, iterated
 * SHA-512); any fixed key does here, as long as both mounts get the same one.
 *
 * The program joins a new anonymous session keyring, adds the token there as
 * a "user" key described by SIG (where eCryptfs's request_key finds it), and
 * execs COMMAND in that session. The mount keeps its own reference to the
 * key, so the keyring may go away with the command.
 *
 * Built statically by scripts/qemu-test (gcc -static) and run by
 * scripts/qemu/tests-gaes.sh.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define KEY_SPEC_SESSION_KEYRING (-3)
#define KEYCTL_JOIN_SESSION_KEYRING 1

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef int32_t s32;

/*
 * From the kernel's include/linux/ecryptfs.h (Linux 6.12), the definitions
 * the password token needs. The kernel checks the version and the type and,
 * for a password token, takes the key from session_key_encryption_key when
 * ECRYPTFS_SESSION_KEY_ENCRYPTION_KEY_SET is set.
 */
#define ECRYPTFS_VERSION_MAJOR 0x00
#define ECRYPTFS_VERSION_MINOR 0x04
#define ECRYPTFS_SALT_SIZE 8
#define ECRYPTFS_SIG_SIZE 8
#define ECRYPTFS_SIG_SIZE_HEX (ECRYPTFS_SIG_SIZE * 2)
#define ECRYPTFS_PASSWORD_SIG_SIZE ECRYPTFS_SIG_SIZE_HEX
#define ECRYPTFS_MAX_KEY_BYTES 64
#define ECRYPTFS_MAX_ENCRYPTED_KEY_BYTES 512
#define ECRYPTFS_MAX_PKI_NAME_BYTES 16

struct ecryptfs_session_key {
	u32 flags;
	u32 encrypted_key_size;
	u32 decrypted_key_size;
	u8 encrypted_key[ECRYPTFS_MAX_ENCRYPTED_KEY_BYTES];
	u8 decrypted_key[ECRYPTFS_MAX_KEY_BYTES];
};

struct ecryptfs_password {
	u32 password_bytes;
	s32 hash_algo;
	u32 hash_iterations;
	u32 session_key_encryption_key_bytes;
#define ECRYPTFS_PERSISTENT_PASSWORD 0x01
#define ECRYPTFS_SESSION_KEY_ENCRYPTION_KEY_SET 0x02
	u32 flags;
	/* Iterated-hash concatenation of salt and passphrase */
	u8 session_key_encryption_key[ECRYPTFS_MAX_KEY_BYTES];
	u8 signature[ECRYPTFS_PASSWORD_SIG_SIZE + 1];
	/* Always in expanded hex */
	u8 salt[ECRYPTFS_SALT_SIZE];
};

enum ecryptfs_token_types { ECRYPTFS_PASSWORD, ECRYPTFS_PRIVATE_KEY };

struct ecryptfs_private_key {
	u32 key_size;
	u32 data_len;
	u8 signature[ECRYPTFS_PASSWORD_SIG_SIZE + 1];
	char pki_type[ECRYPTFS_MAX_PKI_NAME_BYTES + 1];
	u8 data[];
};

struct ecryptfs_auth_tok {
	u16 version; /* 8-bit major and 8-bit minor */
	u16 token_type;
	u32 flags;
	struct ecryptfs_session_key session_key;
	u8 reserved[32];
	union {
		struct ecryptfs_password password;
		struct ecryptfs_private_key private_key;
	} token;
} __attribute__((packed));
/* End of the definitions from include/linux/ecryptfs.h. */

/* PGP_DIGEST_ALGO_SHA512 and ECRYPTFS_DEFAULT_NUM_HASH_ITERATIONS of
 * ecryptfs-utils, recorded in the token as ecryptfs-utils does. */
#define HASH_ALGO_SHA512 10
#define HASH_ITERATIONS 65536

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int is_hex(const char *s, size_t len)
{
	size_t i;

	if (strlen(s) != len)
		return 0;
	for (i = 0; i < len; i++)
		if (hexval(s[i]) < 0)
			return 0;
	return 1;
}

int main(int argc, char **argv)
{
	static struct ecryptfs_auth_tok tok;
	const char *sig, *keyhex;
	size_t klen, i;
	long id;

	if (argc < 4) {
		fprintf(stderr, "usage: %s SIG KEYHEX COMMAND [ARG...]\n", argv[0]);
		return 2;
	}
	sig = argv[1];
	keyhex = argv[2];
	klen = strlen(keyhex) / 2;
	if (!is_hex(sig, ECRYPTFS_SIG_SIZE_HEX)) {
		fprintf(stderr, "SIG must be %d hex digits\n", ECRYPTFS_SIG_SIZE_HEX);
		return 2;
	}
	if (klen < 16 || klen > ECRYPTFS_MAX_KEY_BYTES || !is_hex(keyhex, klen * 2)) {
		fprintf(stderr, "KEYHEX must be 16 to %d bytes in hex\n", ECRYPTFS_MAX_KEY_BYTES);
		return 2;
	}

	tok.version = (ECRYPTFS_VERSION_MAJOR << 8) | ECRYPTFS_VERSION_MINOR;
	tok.token_type = ECRYPTFS_PASSWORD;
	tok.token.password.hash_algo = HASH_ALGO_SHA512;
	tok.token.password.hash_iterations = HASH_ITERATIONS;
	tok.token.password.session_key_encryption_key_bytes = klen;
	tok.token.password.flags = ECRYPTFS_SESSION_KEY_ENCRYPTION_KEY_SET;
	for (i = 0; i < klen; i++)
		tok.token.password.session_key_encryption_key[i] =
			hexval(keyhex[2 * i]) << 4 | hexval(keyhex[2 * i + 1]);
	memcpy(tok.token.password.signature, sig, ECRYPTFS_SIG_SIZE_HEX);

	if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL) < 0) {
		perror("keyctl(KEYCTL_JOIN_SESSION_KEYRING)");
		return 1;
	}
	id = syscall(SYS_add_key, "user", sig, &tok, sizeof(tok), KEY_SPEC_SESSION_KEYRING);
	if (id < 0) {
		perror("add_key");
		return 1;
	}
	execvp(argv[3], argv + 3);
	perror(argv[3]);
	return 1;
}
