/* funasr-cpp configure probe (CMakeLists.txt): does AMX code, as this compiler builds it with
 * optimization, compute correctly on this machine? It does what ggml's AMX kernels do
 * (ggml-cpu/amx/mmq.cpp): a tile config struct filled field by field, int8 tiles packed into
 * buffers by ordinary stores, tileloadd / tdpbssd / tilestored, and checks the int32 sums
 * against a scalar reference. It includes the same intrinsic fix ggml's kernels include
 * (third_party/patches/0008: gcc-tile-intrin.h), so it passes exactly when they can work.
 * Exit 0: correct; 3: the compiler targets no AMX; 2: the kernel refuses the tile data
 * permission; 1: wrong sums; a signal: the code does not run. */
#if (defined(__AMX_TILE__) || defined(__AMXTILE__)) && (defined(__AMX_INT8__) || defined(__AMXINT8__)) && \
    defined(__linux__)
#include <immintrin.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "gcc-tile-intrin.h"

struct tile_config {  /* the ldtilecfg layout, as ggml declares it */
    uint8_t palette_id;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

enum { M = 16, N = 16, K = 64 };

static void __attribute__((noinline)) load_config(void) {
    struct tile_config tc __attribute__((aligned(64)));
    memset(&tc, 0, sizeof(tc));
    tc.palette_id = 1;
    tc.rows[0] = M;     tc.colsb[0] = N * 4;  /* C: int32 */
    tc.rows[1] = M;     tc.colsb[1] = K;      /* A: int8 */
    tc.rows[2] = K / 4; tc.colsb[2] = N * 4;  /* B: int8, 4 k-values per int32 column (VNNI) */
    _tile_loadconfig(&tc);
}

static int __attribute__((noinline)) run(void) {
    int8_t a[M * K] __attribute__((aligned(64)));
    int8_t b[K * N];
    int8_t packed[(K / 4) * N * 4] __attribute__((aligned(64)));
    int32_t c[M * N] __attribute__((aligned(64)));
    for (int i = 0; i < M * K; ++i) a[i] = (int8_t) ((i * 37) % 251 - 125);
    for (int i = 0; i < K * N; ++i) b[i] = (int8_t) ((i * 53) % 241 - 120);
    for (int k = 0; k < K; ++k)
        for (int n = 0; n < N; ++n) packed[(k / 4) * N * 4 + n * 4 + k % 4] = b[k * N + n];
    load_config();
    _tile_zero(0);
    _tile_loadd(1, a, K);
    _tile_loadd(2, packed, N * 4);
    _tile_dpbssd(0, 1, 2);
    _tile_stored(0, c, N * 4);
    _tile_release();
    for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
            int32_t want = 0;
            for (int k = 0; k < K; ++k) want += (int32_t) a[m * K + k] * b[k * N + n];
            if (c[m * N + n] != want) return 1;
        }
    return 0;
}

int main(void) {
    if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */)) {
        return 2;
    }
    return run();
}
#else
int main(void) { return 3; }
#endif
