/*
 * message.h - a message and its forms (message.c): the tbuf a process
 * encodes into, the shared blob in the arena, their views and release
 * helpers, the scratch buffer, and the family's MAC.
 */
#ifndef CONCUR_MESSAGE_H
#define CONCUR_MESSAGE_H

#include "object.h"

/* A self-contained encoded message: bytes plus the concur objects it holds
 * a reference to (released by tbuf_free, whether decoded or not). */
typedef struct tbuf {
  unsigned char *data;
  size_t len, cap;
  cobj **objs;
  size_t nobjs, objcap;
  cobj *owner;   /* listed in objs without a reference: the object that
                    holds this buffer (a thread returning its own handle) */
  int pid;       /* the process owning the references in objs (see cobj_handle) */
} tbuf;

#define TBUF_INIT {NULL, 0, 0, NULL, 0, 0, NULL, 0}

void tbuf_free(tbuf *b);
/* Makes b hold no reference to `owner`, the object b belongs to, so that an
 * object keeping a message that mentions itself is not a cycle. */
void tbuf_set_owner(tbuf *b, cobj *owner);
/* b holds a process-local object (a Thread, a Pipe connection): a message
 * only the process that encoded it may decode. */
int tbuf_has_local(const tbuf *b);
/* The one flat layout of a message outside a tbuf: a head, then its nobjs
 * object pointers, then its len bytes.  A queue record (queue.c) and a
 * shared blob are a msg_head so laid out; a pipe frame (pipe.c) is the same
 * body behind a wire header of its own that carries the same fields. */
#define MSG_LOCAL 1u       /* flags: it references process-local objects */
typedef struct msg_head {
  uint64_t len;            /* bytes after the object pointers */
  uint32_t nobjs;
  int32_t pid;             /* the sender: owner of local references */
  uint32_t kind;           /* the channel's own (a queue record's REC_*) */
  uint32_t flags;          /* MSG_LOCAL */
} msg_head;

/* Bytes of the body (pointers and bytes) of b. */
static inline size_t msg_body_size(const tbuf *b) { return b->nobjs * sizeof(cobj *) + b->len; }
/* Writes b's pointers then bytes at body: moves no reference. */
void msg_write_body(void *body, const tbuf *b);
/* Fills h for b (pid: this process; MSG_LOCAL from local) and writes the
 * body after it. */
void msg_write(msg_head *h, uint32_t kind, int local, const tbuf *b);
/* A body read as a tbuf (holding the body's references, not its own). */
tbuf msg_view_body(const void *body, size_t nobjs, size_t len, int pid);
static inline tbuf msg_view(const msg_head *h) {
  return msg_view_body(h + 1, h->nobjs, (size_t)h->len, h->pid);
}
/* Gives back the references of a message handed over to this process (see
 * cobj_owned_here: another process's local objects are not even read). */
void msg_release(cobj *const *objs, size_t nobjs, int pid);
static inline void tbuf_release_view(const tbuf *view) {
  msg_release(view->objs, view->nobjs, view->pid);
}

/* A message copied into the arena, readable by every process of the family:
 * a msg_head and its body.  References to shared objects are the blob's;
 * references to process-local objects (a Thread) belong to the process that
 * encoded it, which is the only one that can decode it.  sblob_from_tbuf
 * takes b's references and frees b (NULL when the arena is full: b is left
 * as it was); sblob_view is the blob read as a tbuf. */
typedef msg_head sblob;
sblob *sblob_from_tbuf(tbuf *b);
tbuf sblob_view(sblob *s);
void sblob_free(sblob *s);

/* This OS thread's scratch buffer, emptied (its references none): encode a
 * message there, move or drop its references, then tbuf_scratch_trim.
 * Never in use by two callers at once: encoding runs no Lua code. */
tbuf *tbuf_scratch(void);
void tbuf_scratch_trim(tbuf *b);

/* The family's message authentication: a keyed MAC (SipHash-2-4) whose key
 * is made once per process family, before any fork, by mac_runtime_init.
 * Bytecode in messages and pipe frames holding object references carry
 * one, so that no bytes from elsewhere are ever loaded as a function or
 * taken as a reference. */
void mac_runtime_init(void);
void mac_set_key(uint64_t k0, uint64_t k1);   /* fuzzing: a fixed key */
typedef struct mac_state {
  uint64_t v[4];
  uint64_t tail;
  unsigned ntail;
  uint64_t total;
} mac_state;
void mac_begin(mac_state *m);
void mac_add(mac_state *m, const void *p, size_t n);
uint64_t mac_end(mac_state *m);
uint64_t mac_of(const void *p, size_t n);
/* The same MAC under a key of the caller's (core.encode for another machine),
 * and that key made from a secret (NULL: a fixed built-in key). */
void mac_begin_key(mac_state *m, const uint64_t key[2]);
uint64_t mac_of_key(const uint64_t key[2], const void *p, size_t n);
void mac_derive_key(uint64_t key[2], const void *secret, size_t n);
/* A keyed hash of one word for hash tables (dict.c), not a MAC: x under the
 * family key, then a bijective multiply-xor mix, so that no one who lacks
 * the key can pick numbers that share a bucket. */
uint64_t hash_word(uint64_t x);

#endif
