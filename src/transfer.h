/*
 * transfer.h - moving Lua values between lua_States (transfer.c): the
 * encoder, the decoder and the name cache.
 */
#ifndef CONCUR_TRANSFER_H
#define CONCUR_TRANSFER_H

#include "message.h"

/* Encodes the n values at idx .. idx+n-1 of L into b (appending).  `root`
 * names them in error messages ("args" gives "args[2].cb"); with n == 1 and
 * one_root set, the single value is named `root` itself.  On failure returns
 * 0, leaves b as it was and writes a message into err; never raises and runs
 * no Lua code. */
#define TRANSFER_ERRLEN 256
int transfer_encode(lua_State *L, int idx, int n, const char *root, int one_root,
                    tbuf *b, char err[TRANSFER_ERRLEN]);
/* Decodes the message at b->data[at .. at+len) (objects come from b),
 * pushing its values; returns how many.  Raises a Lua error (the buffer stays
 * owned by the caller) when a module or function cannot be found or the bytes
 * are malformed. */
int transfer_decode_tbuf(lua_State *L, const tbuf *b, size_t at, size_t len);

/* Decodes a shared blob, which keeps its references (may raise). */
int sblob_decode(lua_State *L, sblob *s);
/* Decodes a message whose references are handed over with it (a queue item,
 * a pipe message): they are given back once its values are made, and also
 * when decoding raises; `blob`, when not NULL, is the message and is freed.
 * A message holding a process-local object (has_local) decodes only in the
 * process that sent it; elsewhere it raises, still giving back what it can. */
int transfer_decode_taking(lua_State *L, const tbuf *view, int has_local, sblob *blob);
int sblob_decode_free(lua_State *L, sblob *s);   /* the same for a blob */

/* Forgets the name cache of L (package.loaded changed). */
void transfer_names_changed(lua_State *L);
int transfer_open(lua_State *L);   /* core.transfer, the package.loaded hook */

#endif
