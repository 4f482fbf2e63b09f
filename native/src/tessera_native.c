/*
 * tessera_native: a thin Node-API binding of Intel ISA-L for native/index.ts.
 *
 * Owns nothing but argument plumbing: the TypeScript side chooses the coding
 * matrix, inverts it for decoding and caches tables; this file hands buffers
 * straight to ISA-L (no copies). Every entry point re-checks what it would
 * otherwise trust (types, lengths, counts) and throws a JavaScript error rather
 * than read or write out of bounds: the TypeScript layer turns misuse into
 * TesseraError before it gets here, so these checks are a second line only.
 *
 * Node's own binary exports a gf_mul symbol, and it wins over ISA-L's when
 * libisal.so calls its gf_mul through the PLT (symbol interposition): every
 * ISA-L routine that calls gf_mul (ec_encode_data_base, which ec_encode_data
 * uses below 64 bytes, gf_invert_matrix, ...) crashes inside Node. So this file
 * calls only routines that do not (ec_init_tables, the SIMD ec_encode_data
 * paths from 64 bytes on, crc32_iscsi, gf_gen_cauchy1_matrix) and codes
 * shorter lengths itself, from the same tables.
 *
 * crc32c convention: ISA-L's crc32_iscsi(buf, len, init) neither inverts its
 * initial value nor its result; the standard CRC-32C (Castagnoli, as in iSCSI,
 * ext4, RocksDB unmasked) is ~crc32_iscsi(buf, len, ~previous).
 */
#include <limits.h>
#include <stdint.h>

#include <node_api.h>
#include <isa-l/crc.h>
#include <isa-l/erasure_code.h>

#define MAX_DATA_SHARDS 32
#define MAX_PARITY_SHARDS 8
#define MAX_ROWS (MAX_DATA_SHARDS + MAX_PARITY_SHARDS)
#define CHUNK_BYTES (1 << 30) /* crc32_iscsi takes an int length */

#define CHECK(env, call)                                                   \
  do {                                                                     \
    if ((call) != napi_ok) {                                               \
      napi_throw_error((env), "ERR_TESSERA_NATIVE", "node-api call failed"); \
      return NULL;                                                         \
    }                                                                      \
  } while (0)

#define FAIL(env, msg)                                      \
  do {                                                      \
    napi_throw_error((env), "ERR_TESSERA_NATIVE", (msg));   \
    return NULL;                                            \
  } while (0)

/* Reads a Uint8Array (Buffers are Uint8Arrays); 0 and a thrown error otherwise. */
static int get_bytes(napi_env env, napi_value value, uint8_t **data, size_t *length) {
  napi_typedarray_type type;
  void *ptr = NULL;
  if (napi_get_typedarray_info(env, value, &type, length, &ptr, NULL, NULL) != napi_ok ||
      type != napi_uint8_array) {
    napi_throw_type_error(env, "ERR_TESSERA_NATIVE", "expected a Uint8Array");
    return 0;
  }
  *data = (uint8_t *)ptr;
  return 1;
}

static int get_int(napi_env env, napi_value value, int min, int max, int *out) {
  int32_t v = 0;
  if (napi_get_value_int32(env, value, &v) != napi_ok || v < min || v > max) {
    napi_throw_range_error(env, "ERR_TESSERA_NATIVE", "integer argument out of range");
    return 0;
  }
  *out = v;
  return 1;
}

static int get_uint32(napi_env env, napi_value value, uint32_t *out) {
  if (napi_get_value_uint32(env, value, out) != napi_ok) {
    napi_throw_type_error(env, "ERR_TESSERA_NATIVE", "expected a number");
    return 0;
  }
  return 1;
}

/* Reads an array of Uint8Arrays, each at least min_length bytes, into ptrs. */
static int get_buffer_array(napi_env env, napi_value value, int max_count, size_t min_length,
                            uint8_t **ptrs, uint32_t *count) {
  bool is_array = false;
  if (napi_is_array(env, value, &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, value, count) != napi_ok || *count == 0 ||
      *count > (uint32_t)max_count) {
    napi_throw_range_error(env, "ERR_TESSERA_NATIVE", "expected an array of 1..max buffers");
    return 0;
  }
  for (uint32_t i = 0; i < *count; i++) {
    napi_value item;
    size_t length = 0;
    if (napi_get_element(env, value, i, &item) != napi_ok) return 0;
    if (!get_bytes(env, item, &ptrs[i], &length)) return 0;
    if (length < min_length) {
      napi_throw_range_error(env, "ERR_TESSERA_NATIVE", "buffer shorter than the length to code");
      return 0;
    }
  }
  return 1;
}

/* crc32c(data, previous) -> unsigned standard CRC-32C continuing `previous`. */
static napi_value Crc32c(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) FAIL(env, "crc32c(data, previous)");
  uint8_t *data;
  size_t length;
  uint32_t previous;
  if (!get_bytes(env, argv[0], &data, &length) || !get_uint32(env, argv[1], &previous)) return NULL;
  uint32_t crc = ~previous;
  while (length > 0) {
    int n = length > CHUNK_BYTES ? CHUNK_BYTES : (int)length;
    crc = crc32_iscsi(data, n, crc);
    data += n;
    length -= (size_t)n;
  }
  napi_value result;
  CHECK(env, napi_create_uint32(env, ~crc, &result));
  return result;
}

/*
 * crc32cChunks(data, chunkBytes, out: Uint32Array): the CRC-32C of each
 * consecutive chunkBytes of data (the last may be shorter) into out[i]. One
 * call for every chunk of a blob: per-call overhead (~55 ns) would otherwise
 * be most of the cost of a 4 KiB checksum.
 */
static napi_value Crc32cChunks(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) FAIL(env, "crc32cChunks(data, chunkBytes, out)");
  uint8_t *data;
  size_t length;
  int chunk;
  if (!get_bytes(env, argv[0], &data, &length) || !get_int(env, argv[1], 1, CHUNK_BYTES, &chunk)) return NULL;
  napi_typedarray_type type;
  size_t count;
  void *raw;
  CHECK(env, napi_get_typedarray_info(env, argv[2], &type, &count, &raw, NULL, NULL));
  if (type != napi_uint32_array) FAIL(env, "crc32cChunks: out must be a Uint32Array");
  size_t chunks = (length + (size_t)chunk - 1) / (size_t)chunk;
  if (count < chunks) FAIL(env, "crc32cChunks: out is too short");
  uint32_t *out = (uint32_t *)raw;
  for (size_t i = 0; i < chunks; i++) {
    size_t at = i * (size_t)chunk;
    size_t n = length - at < (size_t)chunk ? length - at : (size_t)chunk;
    out[i] = ~crc32_iscsi(data + at, (int)n, 0xffffffffu);
  }
  return NULL;
}

/* initTables(k, rows, coefficients[rows*k], tables[32*k*rows]): ec_init_tables into a caller buffer. */
static napi_value InitTables(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4) FAIL(env, "initTables(k, rows, coefficients, tables)");
  int k, rows;
  uint8_t *coefficients, *tables;
  size_t coefficients_length, tables_length;
  if (!get_int(env, argv[0], 1, MAX_DATA_SHARDS, &k) || !get_int(env, argv[1], 1, MAX_ROWS, &rows) ||
      !get_bytes(env, argv[2], &coefficients, &coefficients_length) ||
      !get_bytes(env, argv[3], &tables, &tables_length))
    return NULL;
  if (coefficients_length != (size_t)(k * rows) || tables_length != (size_t)(32 * k * rows))
    FAIL(env, "initTables: coefficients must be rows*k bytes and tables 32*k*rows bytes");
  ec_init_tables(k, rows, coefficients, tables);
  return NULL;
}

/* The products ec_init_tables tabulated: for coefficient c, tbl[x] = c*x and tbl[16+x] = c*(x<<4). */
static void encode_short(int length, int k, int rows, const uint8_t *tables, uint8_t **sources, uint8_t **targets) {
  for (int r = 0; r < rows; r++) {
    for (int i = 0; i < length; i++) {
      uint8_t acc = 0;
      for (int j = 0; j < k; j++) {
        const uint8_t *tbl = tables + 32 * (r * k + j);
        uint8_t x = sources[j][i];
        acc ^= tbl[x & 15] ^ tbl[16 + (x >> 4)];
      }
      targets[r][i] = acc;
    }
  }
}

static int ranges_overlap(const uint8_t *a, const uint8_t *b, size_t length) {
  return a < b + length && b < a + length;
}

/* Whether a target shares bytes with a source or another target: the output would silently be garbage. */
static int targets_overlap(size_t length, uint8_t **sources, uint32_t k, uint8_t **targets, uint32_t rows) {
  for (uint32_t r = 0; r < rows; r++) {
    for (uint32_t j = 0; j < k; j++)
      if (ranges_overlap(targets[r], sources[j], length)) return 1;
    for (uint32_t q = r + 1; q < rows; q++)
      if (ranges_overlap(targets[r], targets[q], length)) return 1;
  }
  return 0;
}

/*
 * encode(length, tables, sources[k], targets[rows]): ec_encode_data over the
 * first `length` bytes of each buffer. Used for parity and for decoding alike
 * (decoding is encoding with the rows of an inverted matrix). Refuses
 * targets that overlap sources or each other (error code ERR_TESSERA_OVERLAP):
 * checked here on raw pointers because it is far cheaper than in JavaScript.
 */
static napi_value Encode(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4) FAIL(env, "encode(length, tables, sources, targets)");
  int length;
  uint8_t *tables;
  size_t tables_length;
  uint8_t *sources[MAX_DATA_SHARDS];
  uint8_t *targets[MAX_ROWS];
  uint32_t k = 0, rows = 0;
  if (!get_int(env, argv[0], 1, INT_MAX, &length) || !get_bytes(env, argv[1], &tables, &tables_length) ||
      !get_buffer_array(env, argv[2], MAX_DATA_SHARDS, (size_t)length, sources, &k) ||
      !get_buffer_array(env, argv[3], MAX_ROWS, (size_t)length, targets, &rows))
    return NULL;
  if (tables_length != (size_t)32 * k * rows) FAIL(env, "encode: tables must be 32*k*rows bytes");
  if (targets_overlap((size_t)length, sources, k, targets, rows)) {
    napi_throw_error(env, "ERR_TESSERA_OVERLAP", "an output shard overlaps another shard's memory");
    return NULL;
  }
  if (length < 64) {
    encode_short(length, (int)k, (int)rows, tables, sources, targets);
  } else {
    ec_encode_data(length, (int)k, (int)rows, tables, sources, targets);
  }
  return NULL;
}

/* cauchyMatrix(k, m) -> (k+m) x k bytes from gf_gen_cauchy1_matrix (tests check ours against it). */
static napi_value CauchyMatrix(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) FAIL(env, "cauchyMatrix(k, m)");
  int k, m;
  if (!get_int(env, argv[0], 1, MAX_DATA_SHARDS, &k) || !get_int(env, argv[1], 1, MAX_PARITY_SHARDS, &m))
    return NULL;
  napi_value result;
  void *data;
  CHECK(env, napi_create_buffer(env, (size_t)((k + m) * k), &data, &result));
  gf_gen_cauchy1_matrix((unsigned char *)data, k + m, k);
  return result;
}

/* alignmentPadding(view) -> bytes from the view's start to the next 64-byte boundary (for shard allocation). */
static napi_value AlignmentPadding(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) FAIL(env, "alignmentPadding(view)");
  uint8_t *data;
  size_t length;
  if (!get_bytes(env, argv[0], &data, &length)) return NULL;
  napi_value result;
  CHECK(env, napi_create_uint32(env, (uint32_t)((64 - (uintptr_t)data % 64) % 64), &result));
  return result;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"crc32c", NULL, Crc32c, NULL, NULL, NULL, napi_enumerable, NULL},
      {"crc32cChunks", NULL, Crc32cChunks, NULL, NULL, NULL, napi_enumerable, NULL},
      {"initTables", NULL, InitTables, NULL, NULL, NULL, napi_enumerable, NULL},
      {"encode", NULL, Encode, NULL, NULL, NULL, napi_enumerable, NULL},
      {"alignmentPadding", NULL, AlignmentPadding, NULL, NULL, NULL, napi_enumerable, NULL},
      {"cauchyMatrix", NULL, CauchyMatrix, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  CHECK(env, napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
