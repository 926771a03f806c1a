/*
 * message.c - a message: bytes plus the concur objects it holds a reference
 * to.  Its forms (a tbuf in a process's memory, a shared blob in the arena),
 * the views and release helpers every channel uses (queue records, pipe
 * frames, shared values), each OS thread's scratch buffer, and the family's
 * message authentication (SipHash-2-4 under a key made once per family).
 * The encoder and decoder that write and read the bytes are transfer.c.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "message.h"

/* ---- message authentication ---------------------------------------------- */

/* SipHash-2-4 with the family's key: a MAC over bytes no other party can
 * forge, cheap for the short inputs it gets (bytecode, frame headers). */
static uint64_t mac_key[2];
static pthread_once_t mac_once = PTHREAD_ONCE_INIT;

static void mac_key_make(void) {
  unsigned char k[16];
  size_t got = 0;
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    while (got < sizeof k) {
      ssize_t r = read(fd, k + got, sizeof k - got);
      if (r <= 0)
        break;
      got += (size_t)r;
    }
    close(fd);
  }
  if (got < sizeof k) {
    /* No random device: a key no outsider can predict from the bytes they
     * send is still better than none. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t a = (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&ts;
    uint64_t b = (uint64_t)ts.tv_sec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)(uintptr_t)k;
    memcpy(k, &a, 8);
    memcpy(k + 8, &b, 8);
  }
  memcpy(mac_key, k, sizeof k);
}

void mac_runtime_init(void) { pthread_once(&mac_once, mac_key_make); }

void mac_set_key(uint64_t k0, uint64_t k1) {
  pthread_once(&mac_once, mac_key_make);
  mac_key[0] = k0;
  mac_key[1] = k1;
}

uint64_t hash_word(uint64_t x) {
  x ^= mac_key[0];
  x ^= x >> 32;
  x *= 0xd6e8feb86659fd93ULL;
  x ^= x >> 32;
  x *= 0xd6e8feb86659fd93ULL;
  x ^= x >> 32;
  return x;
}

#define ROTL64(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
  do {                                                                                             \
    m->v[0] += m->v[1]; m->v[1] = ROTL64(m->v[1], 13); m->v[1] ^= m->v[0];                         \
    m->v[0] = ROTL64(m->v[0], 32);                                                                 \
    m->v[2] += m->v[3]; m->v[3] = ROTL64(m->v[3], 16); m->v[3] ^= m->v[2];                         \
    m->v[0] += m->v[3]; m->v[3] = ROTL64(m->v[3], 21); m->v[3] ^= m->v[0];                         \
    m->v[2] += m->v[1]; m->v[1] = ROTL64(m->v[1], 17); m->v[1] ^= m->v[2];                         \
    m->v[2] = ROTL64(m->v[2], 32);                                                                 \
  } while (0)

void mac_begin_key(mac_state *m, const uint64_t key[2]) {
  m->v[0] = 0x736f6d6570736575ULL ^ key[0];
  m->v[1] = 0x646f72616e646f6dULL ^ key[1];
  m->v[2] = 0x6c7967656e657261ULL ^ key[0];
  m->v[3] = 0x7465646279746573ULL ^ key[1];
  m->tail = 0;
  m->ntail = 0;
  m->total = 0;
}

void mac_begin(mac_state *m) { mac_begin_key(m, mac_key); }

static inline void mac_word(mac_state *m, uint64_t w) {
  m->v[3] ^= w;
  SIPROUND;
  SIPROUND;
  m->v[0] ^= w;
}

void mac_add(mac_state *m, const void *p, size_t n) {
  const unsigned char *s = p;
  m->total += n;
  while (n > 0 && m->ntail < 8) {
    m->tail |= (uint64_t)*s++ << (8 * m->ntail++);
    n--;
  }
  if (m->ntail < 8)
    return;
  mac_word(m, m->tail);
  m->tail = 0;
  m->ntail = 0;
  for (; n >= 8; n -= 8, s += 8)
    mac_word(m, (uint64_t)s[0] | (uint64_t)s[1] << 8 | (uint64_t)s[2] << 16 |
                    (uint64_t)s[3] << 24 | (uint64_t)s[4] << 32 | (uint64_t)s[5] << 40 |
                    (uint64_t)s[6] << 48 | (uint64_t)s[7] << 56);
  while (n > 0) {
    m->tail |= (uint64_t)*s++ << (8 * m->ntail++);
    n--;
  }
}

uint64_t mac_end(mac_state *m) {
  mac_word(m, m->tail | (uint64_t)(m->total & 0xff) << 56);
  m->v[2] ^= 0xff;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  return m->v[0] ^ m->v[1] ^ m->v[2] ^ m->v[3];
}

uint64_t mac_of(const void *p, size_t n) {
  mac_state m;
  mac_begin(&m);
  mac_add(&m, p, n);
  return mac_end(&m);
}

uint64_t mac_of_key(const uint64_t key[2], const void *p, size_t n) {
  mac_state m;
  mac_begin_key(&m, key);
  mac_add(&m, p, n);
  return mac_end(&m);
}

/* Two SipHashes of the secret under fixed keys of their own; without a
 * secret, a fixed key (bytes for another machine need a key both know). */
void mac_derive_key(uint64_t key[2], const void *secret, size_t n) {
  static const uint64_t fixed[2][2] = {
    {0x636f6e6375722d72ULL, 0x65646973206b6579ULL},
    {0x9e3779b97f4a7c15ULL, 0xc2b2ae3d27d4eb4fULL},
  };
  if (secret == NULL) {
    key[0] = 0x5f636f6e6375725fULL;   /* "_concur_" */
    key[1] = 0x6e6f2d7365637265ULL;
    return;
  }
  key[0] = mac_of_key(fixed[0], secret, n);
  key[1] = mac_of_key(fixed[1], secret, n);
}


void tbuf_free(tbuf *b) {
  for (size_t i = 0; i < b->nobjs; i++)
    if (b->objs[i] != b->owner)
      cobj_release_owned(b->objs[i], b->pid);
  b->owner = NULL;
  free(b->objs);
  free(b->data);
  b->objs = NULL;
  b->data = NULL;
  b->len = b->cap = b->nobjs = b->objcap = 0;
}

void tbuf_set_owner(tbuf *b, cobj *owner) {
  /* The caller holds its own reference to owner: none of these is the last. */
  for (size_t i = 0; i < b->nobjs; i++)
    if (b->objs[i] == owner && b->owner != owner)
      cobj_decref(owner);
  b->owner = owner;
}

/* ---- messages in shared memory ------------------------------------------ */

int tbuf_has_local(const tbuf *b) {
  for (size_t i = 0; i < b->nobjs; i++)
    if (!b->objs[i]->type->shared)
      return 1;
  return 0;
}

/* ---- the flat layout ------------------------------------------------------ */

void msg_write_body(void *body, const tbuf *b) {
  unsigned char *p = body;
  if (b->nobjs)
    memcpy(p, b->objs, b->nobjs * sizeof(cobj *));
  if (b->len)
    memcpy(p + b->nobjs * sizeof(cobj *), b->data, b->len);
}

void msg_write(msg_head *h, uint32_t kind, int local, const tbuf *b) {
  h->len = b->len;
  h->nobjs = (uint32_t)b->nobjs;
  h->pid = concur_self;
  h->kind = kind;
  h->flags = local ? MSG_LOCAL : 0;
  msg_write_body(h + 1, b);
}

tbuf msg_view_body(const void *body, size_t nobjs, size_t len, int pid) {
  cobj **objs = (cobj **)body;
  return (tbuf){(unsigned char *)(objs + nobjs), len, len, objs, nobjs, nobjs, NULL, pid};
}

void msg_release(cobj *const *objs, size_t nobjs, int pid) {
  for (size_t i = 0; i < nobjs; i++)
    if (cobj_owned_here(objs[i], pid))
      cobj_decref(objs[i]);
}

/* ---- messages in shared memory ------------------------------------------ */

sblob *sblob_from_tbuf(tbuf *b) {
  sblob *s = shm_alloc(sizeof(sblob) + msg_body_size(b));
  if (s == NULL)
    return NULL;
  msg_write(s, 0, tbuf_has_local(b), b);
  /* The references move to the blob; b keeps its bytes, holds none. */
  b->owner = NULL;
  b->nobjs = 0;
  tbuf_free(b);
  return s;
}

tbuf sblob_view(sblob *s) { return msg_view(s); }

void sblob_free(sblob *s) {
  if (s == NULL)
    return;
  msg_release((cobj *const *)(s + 1), s->nobjs, s->pid);
  shm_free(s);
}

/* ---- each thread's scratch buffer ------------------------------------------ */

/* Queue and Pipe encode into a buffer kept by the OS thread: no allocation
 * per message once it has grown.  Freed when the thread ends (the key's
 * destructor); trimmed back after a large message. */
#define SCRATCH_KEEP (1u << 20)

static _Thread_local tbuf scratch;
static _Thread_local int scratch_registered;
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *p) { tbuf_free(p); }
static void scratch_key_make(void) {
  if (pthread_key_create(&scratch_key, scratch_free) != 0)
    scratch_key = (pthread_key_t)-1;
}

tbuf *tbuf_scratch(void) {
  if (!scratch_registered) {
    pthread_once(&scratch_once, scratch_key_make);
    if (scratch_key != (pthread_key_t)-1)
      pthread_setspecific(scratch_key, &scratch);
    scratch_registered = 1;
  }
  scratch.len = 0;
  return &scratch;
}

void tbuf_scratch_trim(tbuf *b) {
  b->len = 0;
  if (b->nobjs == 0 && (b->cap > SCRATCH_KEEP || b->objcap > SCRATCH_KEEP / sizeof(cobj *)))
    tbuf_free(b);
}


