/* XXH3 compiled for AVX2, chosen at run time by hot_read.c when the CPU has it (the
 * `xxhash` wheel dispatches the same way): a 20 KiB needle hashes in about a third of the
 * SSE2 build's instructions. Everything else in the extension stays baseline x86-64. */
#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
#pragma GCC target("avx2")
#define PINHOLE_XXH3_AVX2 1
#endif

#include <stddef.h>
#include <stdint.h>

#define XXH_INLINE_ALL
#include "xxhash.h"

#include "xxh3_avx2.h"

int
pinhole_xxh3_avx2_built(void)
{
#if defined(PINHOLE_XXH3_AVX2) && XXH_VECTOR == XXH_AVX2
    return 1;
#else
    return 0;
#endif
}

uint64_t
pinhole_xxh3_avx2(const void *data, size_t size, uint64_t seed)
{
    return XXH3_64bits_withSeed(data, size, seed);
}
