/*
 * io.h: file formats. IDX (gzipped or raw), PNG/JPEG read, PNG write and grids,
 * image folders (torchvision ImageFolder layout), safetensors read/write, and a
 * small JSON writer. Every reader is strict: sizes in headers are checked against the
 * bytes actually present, and a malformed file gives a status + message, never a
 * crash or an over-read.
 */
#ifndef DAP_IO_H
#define DAP_IO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- raw images (io/image.c) ----------------------------------------------- */
/* An 8-bit image, interleaved channels (H, W, C), C = 1 or 3. */
typedef struct dap_image8 {
    int h, w, c;
    uint8_t *px; /* h * w * c */
} dap_image8;
void dap_image8_free(dap_image8 *im);
/* Reads PNG or JPEG (by signature, not by extension); palette/16-bit/alpha are
 * converted to 8-bit gray or RGB. */
int dap_image_read(const char *path, dap_image8 *out);
/* Writes an 8-bit PNG atomically (tmp + rename). */
int dap_png_write(const char *path, const uint8_t *px, int h, int w, int c);
/* Resizes (bilinear, antialiased by area when shrinking) the shorter side to `size`
 * and centre-crops to size x size; c_out 1 or 3 converts channels. */
void dap_image_resize_crop(const dap_image8 *in, int size, int c_out, uint8_t *out /* size*size*c_out */);
/* The centre crop of the DiT / ADM code (center_crop_arr) for a latent prior: RGB; while
 * the shorter side is >= 2 size, halve with PIL's BOX filter; then scale the shorter side
 * to size with PIL's BICUBIC (sizes rounded half to even); crop at floor((H - size) / 2),
 * floor((W - size) / 2). PIL's 8-bit fixed-point resampling, so the pixels match it. */
void dap_image_center_crop_adm(const dap_image8 *in, int size, uint8_t *out /* size*size*3 */);

/* ---- float images and grids ------------------------------------------------ */
/* float CHW in [-1, 1] <-> 8-bit HWC. */
void dap_image_to_u8(const float *chw, int c, int h, int w, uint8_t *hwc);
void dap_image_from_u8(const uint8_t *hwc, int c, int h, int w, float *chw);
/* Writes a grid PNG: `rows` x `cols` images (N = rows*cols, (N, C, H, W) floats in
 * [-1, 1], row-major; NULL entries allowed via count < rows*cols: left black), with a
 * 2-pixel border. */
int dap_grid_write(const char *path, const float *images, int count, int rows, int cols, int c,
                   int h, int w);

/* ---- IDX (io/idx.c) ------------------------------------------------------------ */
/* Reads an IDX file (gzipped if it starts with the gzip magic, raw otherwise).
 * Only unsigned-byte (0x08) data is accepted. dims has ndim entries (ndim <= 4). */
typedef struct dap_idx {
    int ndim;
    int dims[4];
    uint8_t *data; /* prod(dims) bytes */
} dap_idx;
int dap_idx_read(const char *path, dap_idx *out);
void dap_idx_free(dap_idx *x);

/* ---- safetensors (io/safetensors.c) ------------------------------------------- */
typedef enum { DAP_DT_F32 = 0, DAP_DT_F16 = 1, DAP_DT_BF16 = 2, DAP_DT_I64 = 3, DAP_DT_I32 = 4,
               DAP_DT_U8 = 5 } dap_dtype;
const char *dap_dtype_name(int dt);
size_t dap_dtype_size(int dt);

#define DAP_ST_MAX_DIMS 8
typedef struct dap_st_tensor {
    char *name;
    int dtype;
    int ndim;
    int64_t shape[DAP_ST_MAX_DIMS];
    size_t numel;
    size_t begin, end; /* byte offsets inside the data section */
} dap_st_tensor;

typedef struct dap_st {
    char *path;
    uint8_t *file; /* whole file */
    size_t file_size;
    const uint8_t *data; /* start of the data section */
    size_t data_size;
    int n;
    dap_st_tensor *t; /* n tensors, in header order */
    char *metadata_json; /* raw "__metadata__" object text or NULL */
} dap_st;

/* Opens and validates a file: header length vs file size, JSON syntax, dtypes,
 * shapes (no negative or absurd dims, numel * size == end - begin), offsets inside the
 * data section, not overlapping and filling it without gaps (as the reference
 * implementation requires). */
int dap_st_open(dap_st **out, const char *path);
/* "[d0, d1, ...]" into buf (truncated to n bytes), for error messages. */
void dap_shape_str(char *buf, size_t n, const int64_t *shape, int ndim);
void dap_st_close(dap_st *st);
const dap_st_tensor *dap_st_find(const dap_st *st, const char *name);
/* Converts tensor `name` to float32 into dst (numel floats). If `shape` is not NULL the
 * tensor must have exactly that shape (ndim dims) else DAP_ERR_SHAPE naming both. */
int dap_st_read_f32(const dap_st *st, const char *name, float *dst, const int64_t *shape, int ndim);

/* Writer: collects tensors (data is copied) then writes atomically. */
typedef struct dap_st_writer dap_st_writer;
dap_st_writer *dap_st_writer_create(void);
/* dtype DAP_DT_F32 or DAP_DT_F16 (converted from the float data). */
void dap_st_writer_add(dap_st_writer *w, const char *name, int dtype, const float *data, int ndim,
                       const int64_t *shape);
/* Raw bytes of any dtype (e.g. I64 step counters). */
void dap_st_writer_add_raw(dap_st_writer *w, const char *name, int dtype, const void *data,
                           int ndim, const int64_t *shape);
/* "__metadata__" string->string pairs. */
void dap_st_writer_meta(dap_st_writer *w, const char *key, const char *value);
int dap_st_writer_save(dap_st_writer *w, const char *path);
void dap_st_writer_destroy(dap_st_writer *w);
/* Looks up a "__metadata__" value (returns a malloc'd string or NULL). */
char *dap_st_meta_get(const dap_st *st, const char *key);
/* A "__metadata__" value that must be a decimal count: DAP_ERR_MISSING when absent,
 * DAP_ERR_FORMAT (naming file, key and value) when not a number. */
int dap_st_meta_u64(const dap_st *st, const char *key, unsigned long long *out);

/* f16/bf16 conversions */
float dap_f16_to_f32(uint16_t h);
uint16_t dap_f32_to_f16(float f);
float dap_bf16_to_f32(uint16_t h);

/* ---- JSON writer (io/json.c) ------------------------------------------------- */
/* A tiny streaming writer into a growing buffer; commas and escaping are handled. */
typedef struct dap_json {
    char *buf;
    size_t len, cap;
    int depth;
    int need_comma[64];
} dap_json;
void dap_json_init(dap_json *j);
void dap_json_free(dap_json *j);
void dap_json_begin_object(dap_json *j, const char *key); /* key NULL inside arrays / at top */
void dap_json_end_object(dap_json *j);
void dap_json_begin_array(dap_json *j, const char *key);
void dap_json_end_array(dap_json *j);
void dap_json_str(dap_json *j, const char *key, const char *v);
void dap_json_num(dap_json *j, const char *key, double v);
void dap_json_int(dap_json *j, const char *key, long long v);
void dap_json_bool(dap_json *j, const char *key, int v);
int dap_json_save(const dap_json *j, const char *path); /* atomic */

#endif /* DAP_IO_H */
