/* funasr-cpp configure probe (CMakeLists.txt): does AMX code, as this compiler builds it with
 * optimization, run on this machine? Exit 0 = yes, or the compiler targets no AMX anyway. The
 * tile config is written the way ggml writes its own (a plain buffer read by ldtilecfg). */
#if defined(__AMX_TILE__) && defined(__linux__)
#include <immintrin.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
    if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */)) {
        return 2;
    }
    unsigned char cfg[64];
    memset(cfg, 0, sizeof(cfg));
    cfg[0] = 1;               /* palette 1 */
    cfg[16] = 64;             /* tile 0: 64 bytes per row ... */
    cfg[48] = 16;             /* ... 16 rows */
    _tile_loadconfig(cfg);
    _tile_zero(0);
    _tile_release();
    return 0;
}
#else
int main(void) { return 0; }
#endif
