/* funasr-cpp configure probe: can this process run an AMX tile instruction? (exit 0 = yes, or
 * the compiler targets no AMX anyway). Some virtual machines advertise AMX in CPUID without
 * letting a process execute it; ggml's AMX matmul then dies with SIGILL. */
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
