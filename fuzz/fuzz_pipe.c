/*
 * fuzz_pipe.c - a libFuzzer target for the Pipe's frame reader (src/pipe.c):
 * arbitrary records, with or without a memfd body, as anyone holding the
 * descriptor could write them, each received by recv or recv_bytes.  Every
 * receive must return a value or raise a Lua error; no crash, no hang, no
 * descriptor left open, nothing left unread.
 *
 * Linked like fuzz_transfer (fuzz/fuzz.mk) with every file of src/ and the
 * static Lua library.  The input is a list of records:
 *
 *   record := flags(u8) len(u16le) bytes{len} [blen(u16le) body{blen}]
 *   flags: bit 0  a memfd body follows (then bits 2-3: 1 to 4 descriptors)
 *          bit 1  the memfd is left unsealed
 *          bit 4  received with recv_bytes (else recv)
 *          bit 5  the bytes get a well-formed header first (kind from bit 6:
 *                 value or bytes; length: what follows), so that inputs reach
 *                 the decoder and the size checks quickly; bit 7: the header
 *                 claims one object (and its MAC is left wrong)
 *
 * Object references off the wire must never be used: a MAC forged by the
 * fuzzer cannot hold (the key is fixed here but the harness never computes
 * it), so every frame with objects must be refused before any is touched.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lualib.h"
#include "transfer.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;

static void die(const char *what) {
  fprintf(stderr, "fuzz_pipe: %s\n", what);
  abort();
}

/* How many of concur's memfds this process has open (libFuzzer opens and
 * closes files of its own, so the lowest free descriptor says nothing). */
static int memfds_open(void) {
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL)
    return 0;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    char path[300], target[256];
    snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
    ssize_t k = readlink(path, target, sizeof target - 1);
    if (k > 0) {
      target[k] = 0;
      n += strncmp(target, "/memfd:concur", 13) == 0;
    }
  }
  closedir(d);
  return n;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  CONCUR_UNUSED(argc);
  CONCUR_UNUSED(argv);
  L = luaL_newstate();
  if (L == NULL)
    die("cannot make a Lua state");
  luaL_openlibs(L);
  luaL_requiref(L, "concur", luaopen_concur, 1);
  lua_pop(L, 1);
  mac_set_key(0x636f6e637572, 0x70697065);
  static const char setup[] =
      "local concur = require 'concur'\n"
      "local raw = require('concur.core')._pipe_send_raw\n"
      "package.path, package.cpath = '', ''   -- a module named in a message is never a file\n"
      "local a, b = concur.Pipe()\n"
      "local function strip(v, seen)   -- no finalizer named by a message ever runs\n"
      "  if type(v) ~= 'table' or seen[v] then return end\n"
      "  seen[v] = true\n"
      "  debug.setmetatable(v, nil)\n"
      "  for k, x in next, v do strip(k, seen); strip(x, seen) end\n"
      "end\n"
      "return function(rec, body, sealed, nfds, bytes)\n"
      "  if not pcall(raw, b, rec, body, sealed, nfds) then return 'unsent' end\n"
      "  local ok, v = pcall(bytes and a.recv_bytes or a.recv, a)\n"
      "  if ok then strip(v, {}) end\n"
      "  if not ok and type(v) ~= 'string' then error('a non-string error') end\n"
      "  if a:poll() then error('a record was left unread') end\n"
      "  return ok\n"
      "end\n";
  if (luaL_dostring(L, setup) != LUA_OK)
    die(lua_tostring(L, -1));
  lua_setglobal(L, "fuzz_one");
  return 0;
}

static const uint8_t *take(const uint8_t **p, const uint8_t *end, size_t n) {
  if ((size_t)(end - *p) < n)
    return NULL;
  const uint8_t *q = *p;
  *p += n;
  return q;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const uint8_t *p = data, *end = data + size;
  for (int k = 0; k < 64; k++) {
    const uint8_t *f = take(&p, end, 3);
    if (f == NULL)
      break;
    unsigned flags = f[0];
    size_t len = (size_t)f[1] | (size_t)f[2] << 8;
    const uint8_t *bytes = take(&p, end, len);
    if (bytes == NULL)
      break;
    const uint8_t *body = NULL;
    size_t blen = 0;
    if (flags & 1) {
      const uint8_t *b = take(&p, end, 2);
      if (b == NULL)
        break;
      blen = (size_t)b[0] | (size_t)b[1] << 8;
      if ((body = take(&p, end, blen)) == NULL)
        break;
    }
    luaL_Buffer rec;
    lua_getglobal(L, "fuzz_one");
    luaL_buffinit(L, &rec);
    if (flags & 0x20) {
      struct {
        uint32_t magic;
        uint8_t kind, flags, pad[2];
        int32_t pid;
        uint32_t nobjs;
        uint64_t len;
        uint64_t mac;
      } h = {0x32464e43u, (flags & 0x40) ? 2 : 1, (flags & 1) ? 1 : 0, {0, 0}, concur_self,
             (flags & 0x80) ? 1 : 0, 0, 0};
      size_t olen = h.nobjs * sizeof(void *);
      size_t have = (flags & 1) ? blen : len;
      h.len = have >= olen ? have - olen : 0;
      luaL_addlstring(&rec, (const char *)&h, sizeof h);
    }
    luaL_addlstring(&rec, (const char *)bytes, len);
    luaL_pushresult(&rec);
    if (body)
      lua_pushlstring(L, (const char *)body, blen);
    else
      lua_pushnil(L);
    lua_pushboolean(L, !(flags & 2));
    lua_pushinteger(L, body ? 1 + ((flags >> 2) & 3) : 0);
    lua_pushboolean(L, (flags & 0x10) != 0);
    if (lua_pcall(L, 5, 1, 0) != LUA_OK)
      die(lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  lua_settop(L, 0);
  concur_lua_gc(L, LUA_GCCOLLECT, 0);
  if (memfds_open() != 0)
    die("a descriptor was left open");
  return 0;
}
