/*
 * image.c: 8-bit images in and out. PNG (libpng's simplified API) and JPEG
 * (libjpeg) are read by signature into gray or RGB; alpha is dropped (as PIL's
 * convert("RGB") does). PNG writes go through a temporary file and rename(2). Also the
 * resize + centre crop used for image folders, float <-> u8 conversion and grids.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

#include "core/core.h"
#include "io/io.h"

/* Larger images are refused before any pixel buffer is allocated. */
#define IMAGE_MAX_PIXELS ((size_t)1 << 28)

void dap_image8_free(dap_image8 *im) {
    free(im->px);
    memset(im, 0, sizeof *im);
}

static int check_dims(const char *path, size_t w, size_t h) {
    if (w == 0 || h == 0 || w > 1u << 20 || h > 1u << 20 || w * h > IMAGE_MAX_PIXELS)
        return dap_error(DAP_ERR_FORMAT, "%s: image size %zux%zu out of range (at most 2^28 pixels)", path, w,
                         h);
    return DAP_OK;
}

/* ---- PNG ------------------------------------------------------------------- */
static int png_read_mem(const char *path, const uint8_t *buf, size_t n, dap_image8 *out) {
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&im, buf, n))
        return dap_error(DAP_ERR_FORMAT, "%s: bad PNG (%s)", path, im.message);
    int rc = check_dims(path, im.width, im.height);
    if (rc != DAP_OK) {
        png_image_free(&im);
        return rc;
    }
    int color = (im.format & PNG_FORMAT_FLAG_COLOR) != 0;
    int alpha = (im.format & PNG_FORMAT_FLAG_ALPHA) != 0;
    im.format = (color ? PNG_FORMAT_FLAG_COLOR : 0) | (alpha ? PNG_FORMAT_FLAG_ALPHA : 0);
    int cin = (color ? 3 : 1) + alpha;
    size_t npx = (size_t)im.width * im.height;
    uint8_t *px = dap_malloc(npx * (size_t)cin);
    if (!png_image_finish_read(&im, NULL, px, 0, NULL)) {
        free(px);
        return dap_error(DAP_ERR_FORMAT, "%s: bad PNG data (%s)", path, im.message);
    }
    int c = color ? 3 : 1;
    if (alpha) { /* drop alpha in place */
        for (size_t i = 0; i < npx; i++)
            for (int k = 0; k < c; k++) px[i * c + k] = px[i * cin + k];
    }
    out->h = (int)im.height;
    out->w = (int)im.width;
    out->c = c;
    out->px = px;
    return DAP_OK;
}

/* ---- JPEG ------------------------------------------------------------------ */
typedef struct {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void jpeg_on_error(j_common_ptr cinfo) {
    jpeg_err *e = (jpeg_err *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->msg);
    longjmp(e->jump, 1);
}
static void jpeg_on_message(j_common_ptr cinfo) { (void)cinfo; } /* no stderr chatter */
/* libjpeg takes running out of data for a warning and fills the missing rows with gray:
 * a truncated file is an error here, as it is in PIL by default. Other warnings (corrupt
 * data it can resynchronise from) pass, as they do there. */
static void jpeg_on_warning(j_common_ptr cinfo, int level) {
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_on_error(cinfo);
}

/* CMYK (n pixels of 4 bytes) to RGB in place, as PIL's convert("RGB"):
 * R = (255 - C)(255 - K) / 255. Files with an Adobe marker (Photoshop's, and every YCCK
 * one) store the inks inverted, so there the stored values are 255 - C and 255 - K. */
static void cmyk_to_rgb(uint8_t *px, size_t n, int adobe_inverted) {
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = px + 4 * i;
        int k = adobe_inverted ? p[3] : 255 - p[3];
        uint8_t rgb[3];
        for (int q = 0; q < 3; q++) {
            int v = adobe_inverted ? p[q] : 255 - p[q];
            rgb[q] = (uint8_t)((v * k + 127) / 255);
        }
        memcpy(px + 3 * i, rgb, 3); /* 3 i <= 4 i: never overwrites an unread pixel */
    }
}

static int jpeg_read_mem(const char *path, const uint8_t *buf, size_t n, dap_image8 *out) {
    struct jpeg_decompress_struct cinfo;
    jpeg_err err;
    /* volatile: assigned between setjmp and a possible longjmp */
    uint8_t *volatile px = NULL;
    int rc = DAP_OK;
    cinfo.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = jpeg_on_error;
    err.mgr.output_message = jpeg_on_message;
    err.mgr.emit_message = jpeg_on_warning;
    if (setjmp(err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        free(px);
        return dap_error(DAP_ERR_FORMAT, "%s: bad JPEG (%s)", path, err.msg);
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, buf, (unsigned long)n);
    jpeg_read_header(&cinfo, TRUE);
    int c, cmyk = 0;
    if (cinfo.num_components == 1) {
        cinfo.out_color_space = JCS_GRAYSCALE;
        c = 1;
    } else if (cinfo.jpeg_color_space == JCS_YCbCr || cinfo.jpeg_color_space == JCS_RGB) {
        cinfo.out_color_space = JCS_RGB;
        c = 3;
    } else if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        /* a few ImageNet files: libjpeg gives CMYK (YCCK converted), made RGB below */
        cinfo.out_color_space = JCS_CMYK;
        c = 3, cmyk = 1;
    } else {
        jpeg_destroy_decompress(&cinfo);
        return dap_error(DAP_ERR_FORMAT, "%s: JPEG colour space %d not supported (expected gray or RGB)",
                         path, (int)cinfo.jpeg_color_space);
    }
    rc = check_dims(path, cinfo.image_width, cinfo.image_height);
    if (rc != DAP_OK) {
        jpeg_destroy_decompress(&cinfo);
        return rc;
    }
    jpeg_start_decompress(&cinfo);
    DAP_ASSERT(cinfo.output_components == (cmyk ? 4 : c));
    size_t stride = (size_t)cinfo.output_width * (size_t)cinfo.output_components;
    px = dap_malloc(stride * cinfo.output_height);
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = px + (size_t)cinfo.output_scanline * stride;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    if (cmyk) cmyk_to_rgb(px, (size_t)cinfo.output_width * cinfo.output_height, cinfo.saw_Adobe_marker);
    jpeg_finish_decompress(&cinfo);
    out->h = (int)cinfo.output_height;
    out->w = (int)cinfo.output_width;
    out->c = c;
    out->px = px;
    jpeg_destroy_decompress(&cinfo);
    return DAP_OK;
}

int dap_image_read(const char *path, dap_image8 *out) {
    memset(out, 0, sizeof *out);
    uint8_t *buf;
    size_t n;
    DAP_TRY(dap_read_file(path, &buf, &n));
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    int rc;
    if (n >= 8 && memcmp(buf, png_sig, 8) == 0)
        rc = png_read_mem(path, buf, n, out);
    else if (n >= 3 && buf[0] == 0xff && buf[1] == 0xd8 && buf[2] == 0xff)
        rc = jpeg_read_mem(path, buf, n, out);
    else
        rc = dap_error(DAP_ERR_FORMAT, "%s: not a PNG or JPEG file (unknown signature)", path);
    free(buf);
    if (rc != DAP_OK) memset(out, 0, sizeof *out);
    return rc;
}

int dap_png_write(const char *path, const uint8_t *px, int h, int w, int c) {
    DAP_ASSERT(h > 0 && w > 0 && (c == 1 || c == 3));
    char *tmp;
    FILE *f = dap_tmp_open(path, &tmp);
    if (!f) return DAP_ERR_IO;
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.width = (png_uint_32)w;
    im.height = (png_uint_32)h;
    im.format = c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    int ok = png_image_write_to_stdio(&im, f, 0, px, 0, NULL);
    const char *why = ok ? NULL : im.message;
    char msg[128] = "";
    if (why) snprintf(msg, sizeof msg, "%s", why);
    png_image_free(&im);
    return dap_tmp_commit(f, tmp, path, ok, msg);
}

/* ---- resize + centre crop ----------------------------------------------------
 * A separable triangle filter whose support widens by 1/scale when shrinking, so
 * each output pixel averages the input area it covers (bilinear when enlarging). */
typedef struct {
    int first, count; /* input taps */
    float *w;         /* count weights, summing to 1 */
} taps;

/* Taps for output positions [off, off + nout) of an axis resized from nin to nres. */
static taps *make_taps(int nin, int nres, int off, int nout) {
    double scale = (double)nres / nin;
    double support = scale < 1 ? 1.0 / scale : 1.0;
    int maxc = (int)ceil(support) * 2 + 1;
    taps *t = dap_malloc(sizeof(taps) * (size_t)nout);
    float *wbuf = dap_malloc(sizeof(float) * (size_t)nout * (size_t)maxc);
    for (int o = 0; o < nout; o++) {
        double centre = (o + off + 0.5) / scale; /* in input pixel units */
        int lo = (int)floor(centre - support + 0.5), hi = (int)floor(centre + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > nin) hi = nin;
        if (hi - lo > maxc) hi = lo + maxc;
        double sum = 0;
        float *w = wbuf + (size_t)o * maxc;
        for (int i = lo; i < hi; i++) {
            double x = fabs((i + 0.5 - centre) / support);
            double v = x < 1 ? 1 - x : 0;
            w[i - lo] = (float)v;
            sum += v;
        }
        if (sum <= 0) { /* cannot happen for valid sizes; nearest pixel as a fallback */
            int i = (int)floor(centre);
            lo = i < 0 ? 0 : i >= nin ? nin - 1 : i;
            hi = lo + 1;
            w[0] = 1;
            sum = 1;
        }
        for (int i = 0; i < hi - lo; i++) w[i] = (float)(w[i] / sum);
        t[o].first = lo;
        t[o].count = hi - lo;
        t[o].w = w;
    }
    return t;
}

static void free_taps(taps *t) {
    free(t[0].w);
    free(t);
}

static uint8_t to_byte(float v) {
    v = roundf(v);
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

void dap_image_resize_crop(const dap_image8 *in, int size, int c_out, uint8_t *out) {
    DAP_ASSERT(in->h > 0 && in->w > 0 && size > 0 && (c_out == 1 || c_out == 3));
    DAP_ASSERT(in->c == 1 || in->c == 3);
    int h = in->h, w = in->w, c = c_out;
    /* shorter side -> size, longer side scaled and truncated (torchvision Resize) */
    int rh, rw;
    if (h <= w) {
        rh = size;
        rw = (int)((long long)size * w / h);
    } else {
        rw = size;
        rh = (int)((long long)size * h / w);
    }
    if (rh < size) rh = size;
    if (rw < size) rw = size;
    /* offsets rounded half to even, as Python's round() in torchvision's CenterCrop */
    int top = (int)nearbyint((rh - size) / 2.0), left = (int)nearbyint((rw - size) / 2.0);

    /* channel conversion first (ITU-R 601 luma, as PIL's "L") */
    size_t npx = (size_t)h * w;
    float *src = dap_malloc(sizeof(float) * npx * (size_t)c);
    for (size_t i = 0; i < npx; i++) {
        const uint8_t *p = in->px + i * (size_t)in->c;
        if (in->c == c)
            for (int k = 0; k < c; k++) src[i * c + k] = p[k];
        else if (c == 1)
            src[i] = 0.299f * p[0] + 0.587f * p[1] + 0.114f * p[2];
        else
            for (int k = 0; k < 3; k++) src[i * 3 + k] = p[0];
    }
    taps *tx = make_taps(w, rw, left, size), *ty = make_taps(h, rh, top, size);
    /* horizontal pass: (h, size, c) */
    float *mid = dap_malloc(sizeof(float) * (size_t)h * size * (size_t)c);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < size; x++)
            for (int k = 0; k < c; k++) {
                float s = 0;
                for (int i = 0; i < tx[x].count; i++)
                    s += tx[x].w[i] * src[((size_t)y * w + tx[x].first + i) * c + k];
                mid[((size_t)y * size + x) * c + k] = s;
            }
    /* vertical pass */
    for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++)
            for (int k = 0; k < c; k++) {
                float s = 0;
                for (int i = 0; i < ty[y].count; i++)
                    s += ty[y].w[i] * mid[((size_t)(ty[y].first + i) * size + x) * c + k];
                out[((size_t)y * size + x) * c + k] = to_byte(s);
            }
    free_taps(tx);
    free_taps(ty);
    free(mid);
    free(src);
}

/* ---- the DiT / ADM centre crop ----------------------------------------------
 * PIL's resampling (Resample.c) on 8-bit pixels, so that a prior sees the pixels the DiT
 * code gave it in training: a separable filter whose support widens by the downscaling
 * factor, weights normalised then rounded to 22-bit fixed point, the horizontal pass
 * first with an 8-bit intermediate. */
#define PIL_PRECISION_BITS 22

static double pil_box(double x) { return x > -0.5 && x <= 0.5 ? 1.0 : 0.0; }
static double pil_bicubic(double x) { /* a = -0.5 */
    const double a = -0.5;
    if (x < 0) x = -x;
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
}

/* Fixed-point taps of an axis resized from nin to nout: bounds[2 o] first input, [2 o + 1]
 * count; kk (nout, ksize). Returns ksize. */
static int pil_coeffs(int nin, int nout, double (*filter)(double), double support0, int **bounds, int **kk) {
    const double scale = (double)nin / nout, fscale = scale < 1 ? 1 : scale, support = support0 * fscale;
    const int ksize = (int)ceil(support) * 2 + 1;
    *bounds = dap_malloc(sizeof(int) * 2 * (size_t)nout);
    *kk = dap_calloc((size_t)nout * ksize, sizeof(int));
    double *k = dap_malloc(sizeof(double) * (size_t)ksize);
    for (int o = 0; o < nout; o++) {
        const double centre = (o + 0.5) * scale, ss = 1.0 / fscale;
        int lo = (int)(centre - support + 0.5), hi = (int)(centre + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > nin) hi = nin;
        const int cnt = hi - lo;
        double ww = 0;
        for (int x = 0; x < cnt; x++) ww += k[x] = filter((x + lo - centre + 0.5) * ss);
        for (int x = 0; x < cnt; x++) {
            const double v = (ww != 0 ? k[x] / ww : k[x]) * (1 << PIL_PRECISION_BITS);
            (*kk)[(size_t)o * ksize + x] = (int)(v < 0 ? v - 0.5 : v + 0.5);
        }
        (*bounds)[2 * o] = lo, (*bounds)[2 * o + 1] = cnt;
    }
    free(k);
    return ksize;
}

static uint8_t pil_clip8(int64_t v) {
    v >>= PIL_PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* PIL's Image.resize((nw, nh), filter) of an (h, w, c) image: returns a new buffer. */
static uint8_t *pil_resize(const uint8_t *in, int h, int w, int c, int nw, int nh, double (*filter)(double),
                           double support) {
    int *bx, *kx, *by, *ky;
    const int ksx = pil_coeffs(w, nw, filter, support, &bx, &kx), ksy = pil_coeffs(h, nh, filter, support, &by, &ky);
    /* the horizontal pass only on the rows the vertical one reads */
    const int y0 = nh == h ? 0 : by[0], y1 = nh == h ? h : by[2 * nh - 2] + by[2 * nh - 1];
    const uint8_t *src = in;
    uint8_t *tmp = NULL;
    if (nw != w) {
        tmp = dap_malloc((size_t)(y1 - y0) * nw * c);
#pragma omp parallel for schedule(static)
        for (int y = y0; y < y1; y++)
            for (int x = 0; x < nw; x++)
                for (int q = 0; q < c; q++) {
                    int64_t s = 1 << (PIL_PRECISION_BITS - 1);
                    const int *k = kx + (size_t)x * ksx;
                    for (int i = 0; i < bx[2 * x + 1]; i++) s += (int64_t)in[((size_t)y * w + bx[2 * x] + i) * c + q] * k[i];
                    tmp[((size_t)(y - y0) * nw + x) * c + q] = pil_clip8(s);
                }
        src = tmp;
    } else if (nh != h) {
        src = in + (size_t)y0 * w * c;
    }
    uint8_t *out = dap_malloc((size_t)nh * nw * c);
    if (nh != h) {
#pragma omp parallel for schedule(static)
        for (int y = 0; y < nh; y++)
            for (int x = 0; x < nw; x++)
                for (int q = 0; q < c; q++) {
                    int64_t s = 1 << (PIL_PRECISION_BITS - 1);
                    const int *k = ky + (size_t)y * ksy;
                    for (int i = 0; i < by[2 * y + 1]; i++)
                        s += (int64_t)src[((size_t)(by[2 * y] - y0 + i) * nw + x) * c + q] * k[i];
                    out[((size_t)y * nw + x) * c + q] = pil_clip8(s);
                }
    } else {
        memcpy(out, src, (size_t)nh * nw * c);
    }
    free(tmp), free(bx), free(kx), free(by), free(ky);
    return out;
}

void dap_image_center_crop_adm(const dap_image8 *in, int size, uint8_t *out) {
    DAP_ASSERT(in->h > 0 && in->w > 0 && size > 0 && (in->c == 1 || in->c == 3));
    int h = in->h, w = in->w;
    uint8_t *cur = dap_malloc((size_t)h * w * 3); /* convert("RGB") first */
    for (size_t i = 0; i < (size_t)h * w; i++)
        for (int q = 0; q < 3; q++) cur[3 * i + q] = in->px[i * in->c + (in->c == 3 ? q : 0)];
    while ((h < w ? h : w) >= 2 * size) { /* halve with a box filter while the short side allows */
        uint8_t *next = pil_resize(cur, h, w, 3, w / 2, h / 2, pil_box, 0.5);
        free(cur);
        cur = next, h /= 2, w /= 2;
    }
    const double scale = (double)size / (h < w ? h : w);
    const int nw = (int)nearbyint(w * scale), nh = (int)nearbyint(h * scale); /* Python's round() */
    if (nw != w || nh != h) {
        uint8_t *next = pil_resize(cur, h, w, 3, nw, nh, pil_bicubic, 2.0);
        free(cur);
        cur = next, h = nh, w = nw;
    }
    const int top = (h - size) / 2, left = (w - size) / 2;
    DAP_ASSERT(top >= 0 && left >= 0);
    for (int y = 0; y < size; y++) memcpy(out + (size_t)y * size * 3, cur + ((size_t)(top + y) * w + left) * 3, (size_t)size * 3);
    free(cur);
}

/* ---- float <-> u8 ------------------------------------------------------------ */
void dap_image_to_u8(const float *chw, int c, int h, int w, uint8_t *hwc) {
    size_t hw = (size_t)h * w;
    for (int k = 0; k < c; k++)
        for (size_t i = 0; i < hw; i++) {
            float v = chw[k * hw + i];
            hwc[i * c + k] = v != v ? 0 : to_byte((v + 1.0f) * 127.5f); /* NaN -> 0 */
        }
}

void dap_image_from_u8(const uint8_t *hwc, int c, int h, int w, float *chw) {
    size_t hw = (size_t)h * w;
    for (int k = 0; k < c; k++)
        for (size_t i = 0; i < hw; i++) chw[k * hw + i] = hwc[i * c + k] / 127.5f - 1.0f;
}

int dap_grid_write(const char *path, const float *images, int count, int rows, int cols, int c, int h,
                   int w) {
    DAP_ASSERT(rows > 0 && cols > 0 && h > 0 && w > 0 && (c == 1 || c == 3));
    DAP_ASSERT(count >= 0 && count <= rows * cols);
    const int pad = 2;
    int gh = rows * h + (rows + 1) * pad, gw = cols * w + (cols + 1) * pad;
    uint8_t *grid = dap_malloc((size_t)gh * gw * c);
    memset(grid, 255, (size_t)gh * gw * c); /* white border */
    uint8_t *tile = dap_malloc((size_t)h * w * c);
    for (int r = 0; r < rows; r++)
        for (int q = 0; q < cols; q++) {
            int i = r * cols + q;
            if (i < count)
                dap_image_to_u8(images + (size_t)i * c * h * w, c, h, w, tile);
            else
                memset(tile, 0, (size_t)h * w * c);
            int y0 = pad + r * (h + pad), x0 = pad + q * (w + pad);
            for (int y = 0; y < h; y++)
                memcpy(grid + ((size_t)(y0 + y) * gw + x0) * c, tile + (size_t)y * w * c, (size_t)w * c);
        }
    int rc = dap_png_write(path, grid, gh, gw, c);
    free(tile);
    free(grid);
    return rc;
}
