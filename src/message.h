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
/* Gives back the references of a message handed over to this process (see
 * cobj_owned_here: another process's local objects are not even read). */
void tbuf_release_view(const tbuf *view);

/* A message copied into the arena, readable by every process of the family.
 * References to shared objects are the blob's; references to process-local
 * objects (a Thread) belong to the process that encoded it, which is the
 * only one that can decode it.  sblob_from_tbuf takes b's references and
 * frees b (NULL when the arena is full: b is left as it was); sblob_view is
 * the blob read as a tbuf (holding the blob's references, not its own). */
typedef struct sblob {
  size_t len, nobjs;
  int pid;                  /* the process that made it */
  int has_local;            /* it references process-local objects */
  cobj *objs[];             /* then the bytes */
} sblob;
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

#endif
